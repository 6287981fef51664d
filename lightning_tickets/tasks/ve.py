"""SNLI-VE visual entailment: does the image entail, is it neutral to, or does it contradict the hypothesis?

Head: the VQA-style MLP ``Linear(H, 2H) -> GELU -> LayerNorm -> Linear(2H, 3)`` on the pooled output (UNITER's VE
head); loss: cross-entropy on ``labels`` (0 entailment, 1 neutral, 2 contradiction); metric: accuracy, logged as
``val/acc`` / ``test/acc`` (plus ``train/loss``, ``val/loss``, ``test/loss``).

Example:
    >>> import torch
    >>> from lightning_tickets.backbones import Uniter
    >>> model = VisualEntailment(Uniter("tiny", img_dim=6))
    >>> batch = {"input_ids": torch.tensor([[101, 5, 102]]), "img_feat": torch.randn(1, 2, 6),
    ...          "img_pos_feat": torch.rand(1, 2, 7), "labels": torch.tensor([2])}
    >>> model(batch).shape
    torch.Size([1, 3])
"""

from __future__ import annotations

from typing import Any

from lightning_tickets.backbones.base import VLBackbone
from lightning_tickets.tasks.classification import LabelClassification

#: Class index -> SNLI-VE label (the batch contract's order).
VE_LABELS = ("entailment", "neutral", "contradiction")


class VisualEntailment(LabelClassification):
    """SNLI-VE fine-tuning (3-way classification).

    Args:
        backbone: any :class:`~lightning_tickets.backbones.VLBackbone`.
        num_classes: 3 (:data:`VE_LABELS`).
        head_dropout: dropout before the last head layer.
        **kwargs: training settings (``lr``, ``warmup_steps``, ``adversarial``, ...), see
            :class:`~lightning_tickets.tasks.base.TaskModule`.
    """

    def __init__(self, backbone: VLBackbone, num_classes: int = 3, head_dropout: float = 0.0, **kwargs: Any) -> None:
        super().__init__(backbone, num_classes=num_classes, head_dropout=head_dropout, **kwargs)
