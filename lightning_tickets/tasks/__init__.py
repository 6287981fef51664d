"""Task modules: a backbone, a head, the loss and the metrics of one downstream task."""

from lightning_tickets.tasks.base import TaskModule
from lightning_tickets.tasks.vqa import VQA, VQAHead

__all__ = ["VQA", "TaskModule", "VQAHead"]
