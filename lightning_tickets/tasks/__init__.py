"""Task modules: a backbone, a head, the loss and the metrics of one downstream task."""

from lightning_tickets.tasks.base import TaskModule, VQAHead
from lightning_tickets.tasks.classification import LabelClassification
from lightning_tickets.tasks.gqa import GQA
from lightning_tickets.tasks.nlvr2 import NLVR2
from lightning_tickets.tasks.pretrain import Pretraining
from lightning_tickets.tasks.refexp import ReferringExpression
from lightning_tickets.tasks.retrieval import ImageTextRetrieval
from lightning_tickets.tasks.vcr import VCR
from lightning_tickets.tasks.ve import VisualEntailment
from lightning_tickets.tasks.vqa import VQA

__all__ = [
    "GQA",
    "NLVR2",
    "VCR",
    "VQA",
    "ImageTextRetrieval",
    "LabelClassification",
    "Pretraining",
    "ReferringExpression",
    "TaskModule",
    "VQAHead",
    "VisualEntailment",
]
