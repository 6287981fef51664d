"""Referring-expression accuracy: IoU(predicted box, ground-truth box) >= 0.5, as a torchmetrics ``Metric``.

Example:
    >>> import torch
    >>> metric = GroundingAccuracy()
    >>> pred = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.5]])
    >>> target = torch.tensor([[0.0, 0.0, 0.5, 0.4], [0.25, 0.25, 0.75, 0.75]])
    >>> paired_box_iou(pred, target)  # 0.2/0.25 = 0.8 ; 0.0625/0.4375 = 1/7
    tensor([0.8000, 0.1429])
    >>> float(metric(pred, target))
    0.5
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


def paired_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Element-wise IoU of ``[..., 4]`` boxes ``(x1, y1, x2, y2)`` (broadcasting); 0 for empty unions."""
    x1 = torch.maximum(boxes1[..., 0], boxes2[..., 0])
    y1 = torch.maximum(boxes1[..., 1], boxes2[..., 1])
    x2 = torch.minimum(boxes1[..., 2], boxes2[..., 2])
    y2 = torch.minimum(boxes1[..., 3], boxes2[..., 3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)

    def area(b: torch.Tensor) -> torch.Tensor:
        return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)

    union = area(boxes1) + area(boxes2) - inter
    return inter / union.clamp(min=1e-12)


class GroundingAccuracy(Metric):
    """Fraction of predicted boxes whose IoU with the target box is at least ``iou_threshold``.

    ``update(pred_boxes, target_boxes)`` with ``[B, 4]`` boxes ``(x1, y1, x2, y2)``. Count states, ``"sum"``-reduced
    across processes.

    Args:
        iou_threshold: IoU at or above which a prediction is right (0.5 for RefCOCO/RefCOCO+/RefCOCOg).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: torch.Tensor
    total: torch.Tensor

    def __init__(self, iou_threshold: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.iou_threshold = float(iou_threshold)
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred_boxes: torch.Tensor, target_boxes: torch.Tensor) -> None:
        """Count predictions with IoU >= ``iou_threshold``."""
        if pred_boxes.shape[-1] < 4 or target_boxes.shape[-1] != 4 or pred_boxes.shape[:-1] != target_boxes.shape[:-1]:
            raise ValueError(
                f"pred_boxes {list(pred_boxes.shape)} and target_boxes {list(target_boxes.shape)} must be [B, 4]"
            )
        iou = paired_box_iou(pred_boxes[..., :4].float(), target_boxes.float())
        self.correct += (iou >= self.iou_threshold).sum()
        self.total += iou.numel()

    def compute(self) -> torch.Tensor:
        """Accuracy in ``[0, 1]`` (0 when nothing was seen)."""
        return self.correct.double().div(self.total.clamp(min=1)).float()
