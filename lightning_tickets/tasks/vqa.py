"""Visual question answering as multi-label classification over an answer vocabulary (UNITER recipe).

Head: ``Linear(H, 2H) -> GELU -> LayerNorm -> Linear(2H, num_answers)`` on the pooled output; loss:
binary cross-entropy with logits against the soft target scores, times ``num_answers`` (as UNITER); metric: the
official VQA score (:class:`~lightning_tickets.metrics.VQAScore`), logged as ``val/vqa_score`` (alias ``val/acc``)
and ``test/vqa_score``.

Batches are dicts with the backbone's keys plus ``targets`` (``[B, num_answers]`` soft scores).

Example:
    >>> import torch
    >>> from lightning_tickets.backbones import Uniter
    >>> model = VQA(Uniter("tiny", img_dim=6), num_answers=5)
    >>> batch = {"input_ids": torch.tensor([[101, 5, 102]]), "img_feat": torch.randn(1, 2, 6),
    ...          "img_pos_feat": torch.rand(1, 2, 7), "targets": torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.3]])}
    >>> model(batch).shape
    torch.Size([1, 5])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F

from lightning_tickets.backbones.base import VLBackbone
from lightning_tickets.metrics.vqa import VQAScore
from lightning_tickets.tasks.adversarial import Logits
from lightning_tickets.tasks.base import StepOutput, TaskModule, VQAHead, init_head_

__all__ = ["VQA", "VQAHead"]


class VQA(TaskModule):
    """VQA fine-tuning of a vision-and-language backbone.

    Args:
        backbone: any :class:`~lightning_tickets.backbones.VLBackbone`.
        num_answers: size of the answer vocabulary (3129 for VQA v2 as in UNITER, 13 for easy-VQA).
        head_dropout: dropout before the last head layer.
        loss: ``"bce"`` (UNITER: binary cross-entropy on soft scores x ``num_answers``) or ``"ce"`` (soft-target
            cross-entropy; better when every question has one answer, e.g. easy-VQA).
        **kwargs: training settings (``lr``, ``warmup_steps``, ``adversarial``, ...), see
            :class:`~lightning_tickets.tasks.base.TaskModule`.
    """

    def __init__(
        self,
        backbone: VLBackbone,
        num_answers: int = 3129,
        head_dropout: float = 0.0,
        loss: Literal["bce", "ce"] = "bce",
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, **kwargs)
        if loss not in ("bce", "ce"):
            raise ValueError(f"loss must be 'bce' or 'ce', got {loss!r}")
        self.loss_type = loss
        self.num_answers = int(num_answers)
        self.head = VQAHead(backbone.hidden_size, self.num_answers, head_dropout)
        init_head_(self.head)
        self.val_score = VQAScore()
        self.test_score = VQAScore()

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Answer logits ``[B, num_answers]``."""
        return self.head(self.backbone(batch).pooled)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``"bce"``: UNITER's loss, mean BCE-with-logits over (question, answer) pairs x ``num_answers``;
        ``"ce"``: soft-target cross-entropy ``-sum(t * log_softmax(logits)) / sum(t)`` averaged over questions."""
        targets = targets.to(logits.dtype)
        if self.loss_type == "ce":
            per_q = -(targets * F.log_softmax(logits, dim=1)).sum(1) / targets.sum(1).clamp(min=1e-6)
            return per_q.mean()
        return F.binary_cross_entropy_with_logits(logits, targets) * targets.shape[1]

    def training_outputs(self, batch: Mapping[str, Any], batch_idx: int) -> StepOutput:
        """Loss and answer logits (a Bernoulli per answer with ``loss="bce"``, a softmax with ``"ce"``)."""
        logits = self(batch)
        kind = "categorical" if self.loss_type == "ce" else "bernoulli"
        return StepOutput(self.loss(logits, batch["targets"]), logits.shape[0], [Logits(logits, kind)])

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        logits = self(batch)
        self.log("val/loss", self.loss(logits, batch["targets"]), batch_size=logits.shape[0], sync_dist=True)
        self.val_score.update(logits, batch["targets"])

    def on_validation_epoch_end(self) -> None:
        score = self.val_score.compute()
        self.log("val/vqa_score", score, prog_bar=True)
        self.log("val/acc", score)
        self.val_score.reset()

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        logits = self(batch)
        self.log("test/loss", self.loss(logits, batch["targets"]), batch_size=logits.shape[0], sync_dist=True)
        self.test_score.update(logits, batch["targets"])

    def on_test_epoch_end(self) -> None:
        score = self.test_score.compute()
        self.log("test/vqa_score", score)
        self.log("test/acc", score)
        self.test_score.reset()

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """Predicted answer indices ``[B]``."""
        return self(batch).argmax(dim=1)
