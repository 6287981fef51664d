"""Metrics that torchmetrics lacks."""

from lightning_tickets.metrics.vqa import VQAScore, vqa_answer_score

__all__ = ["VQAScore", "vqa_answer_score"]
