"""Metrics that torchmetrics lacks (each declares how DDP reduces its states)."""

from lightning_tickets.metrics.accuracy import ArgmaxAccuracy
from lightning_tickets.metrics.grounding import GroundingAccuracy, paired_box_iou
from lightning_tickets.metrics.recall import RetrievalRecall, recall_at_k
from lightning_tickets.metrics.vcr import VCRAccuracy
from lightning_tickets.metrics.vqa import VQAScore, vqa_answer_score

__all__ = [
    "ArgmaxAccuracy",
    "GroundingAccuracy",
    "RetrievalRecall",
    "VCRAccuracy",
    "VQAScore",
    "paired_box_iou",
    "recall_at_k",
    "vqa_answer_score",
]
