"""GQA as single-label classification over an answer vocabulary.

Head: UNITER's VQA MLP ``Linear(H, 2H) -> GELU -> LayerNorm -> Linear(2H, num_answers)`` on the pooled output
(:class:`~lightning_tickets.tasks.base.VQAHead`); loss: cross-entropy on ``labels`` (``-1`` = answer outside the
vocabulary: ignored by the loss, counted as wrong by the metric, as GQA's evaluation does); metric: accuracy
(:class:`~lightning_tickets.metrics.accuracy.ArgmaxAccuracy`), logged as ``val/acc`` / ``test/acc`` (and
``train/loss``, ``val/loss``, ``test/loss``).

Batches are dicts with the backbone's keys plus ``labels`` (``[B]`` long).

Example:
    >>> import torch
    >>> from lightning_tickets.backbones import Uniter
    >>> model = GQA(Uniter("tiny", img_dim=6), num_answers=5)
    >>> batch = {"input_ids": torch.tensor([[101, 5, 102]]), "img_feat": torch.randn(1, 2, 6),
    ...          "img_pos_feat": torch.rand(1, 2, 7), "labels": torch.tensor([3])}
    >>> model(batch).shape, bool(torch.isfinite(model.loss(model(batch), batch["labels"])))
    (torch.Size([1, 5]), True)
"""

from __future__ import annotations

from typing import Any

from lightning_tickets.backbones.base import VLBackbone
from lightning_tickets.tasks.base import cross_entropy_ignore, init_head_
from lightning_tickets.tasks.classification import LabelClassification

__all__ = ["GQA", "LabelClassification", "cross_entropy_ignore", "init_head_"]


class GQA(LabelClassification):
    """GQA fine-tuning (balanced split; accuracy on testdev in the paper).

    Args:
        backbone: any :class:`~lightning_tickets.backbones.VLBackbone`.
        num_answers: size of the answer vocabulary (1842 as LXMERT's GQA answer set; the datamodule's
            ``num_answers``).
        head_dropout: dropout before the last head layer.
        **kwargs: training settings (``lr``, ``warmup_steps``, ``adversarial``, ...), see
            :class:`~lightning_tickets.tasks.base.TaskModule`.
    """

    def __init__(self, backbone: VLBackbone, num_answers: int = 1842, head_dropout: float = 0.0, **kwargs: Any) -> None:
        super().__init__(backbone, num_classes=num_answers, head_dropout=head_dropout, **kwargs)
        self.num_answers = self.num_classes
