"""VCR (visual commonsense reasoning): Q->A and QA->R multiple choice, scored per candidate.

A batch (``MultipleChoiceCollator``) is ``{"qa": 4B rows, "qar": 4B rows, "answer_label": [B],
"rationale_label": [B], "num_choices": 4}``; rows ``4i..4i+3`` of each sub-batch are record ``i``'s candidates (in
``qar`` the question is followed by the *gold* answer and a candidate rationale). The backbone runs on each
sub-batch; a candidate's score is ``MLP(pooled)``: ``Linear(H, 2H) -> GELU -> LayerNorm -> Linear(2H, 1)``; the 4
scores of a record are a softmax over candidates: loss = CE(Q->A) + CE(QA->R). Metrics
(:class:`~lightning_tickets.metrics.vcr.VCRAccuracy`): ``val/q2a``, ``val/qa2r``, ``val/q2ar`` (both right; the
paper's number; alias ``val/acc``) and the same under ``test/``; plus ``train/loss``, ``val/loss``, ``test/loss``.

UNITER scores each candidate with a 2-way classifier (match / no match) and binary cross-entropy over candidates;
here one score per candidate and a 4-way softmax (same head body, one output), which ranks the same way.

Example:
    >>> import torch
    >>> from lightning_tickets.backbones import Uniter
    >>> model = VCR(Uniter("tiny", img_dim=6))
    >>> sub = lambda: {"input_ids": torch.randint(1, 999, (8, 5)), "img_feat": torch.randn(8, 2, 6),
    ...                "img_pos_feat": torch.rand(8, 2, 7)}
    >>> batch = {"qa": sub(), "qar": sub(), "answer_label": torch.tensor([0, 3]),
    ...          "rationale_label": torch.tensor([1, 2]), "num_choices": 4}
    >>> qa, qar = model(batch)
    >>> qa.shape, qar.shape
    (torch.Size([2, 4]), torch.Size([2, 4]))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_tickets.backbones.base import VLBackbone
from lightning_tickets.metrics.vcr import VCRAccuracy
from lightning_tickets.tasks.adversarial import Logits
from lightning_tickets.tasks.base import StepOutput, TaskModule, VQAHead, init_head_


class VCR(TaskModule):
    """VCR fine-tuning (Q->A and QA->R in every step).

    Args:
        backbone: any :class:`~lightning_tickets.backbones.VLBackbone`.
        num_choices: candidates per record when the batch does not say (``batch["num_choices"]`` wins).
        head_dropout: dropout before the last head layer.
        **kwargs: training settings (``lr``, ``warmup_steps``, ``adversarial``, ...), see
            :class:`~lightning_tickets.tasks.base.TaskModule`.
    """

    def __init__(
        self,
        backbone: VLBackbone,
        num_choices: int = 4,
        head_dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, **kwargs)
        self.num_choices = int(num_choices)
        self.head: nn.Module = VQAHead(backbone.hidden_size, 1, head_dropout)
        init_head_(self.head)
        self.val_metric = VCRAccuracy()
        self.test_metric = VCRAccuracy()

    def score(self, sub_batch: Mapping[str, Any], num_choices: int) -> torch.Tensor:
        """Candidate scores ``[B, num_choices]`` of one sub-batch of ``B * num_choices`` rows."""
        scores = self.head(self.backbone(sub_batch).pooled).squeeze(-1)
        if scores.shape[0] % num_choices:
            raise ValueError(f"a VCR sub-batch has {scores.shape[0]} rows, not a multiple of {num_choices} choices")
        return scores.view(-1, num_choices)

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(qa_scores, qar_scores)``, each ``[B, num_choices]``."""
        n = int(batch.get("num_choices", self.num_choices))
        return self.score(batch["qa"], n), self.score(batch["qar"], n)

    def loss(
        self, qa: torch.Tensor, qar: torch.Tensor, answer_label: torch.Tensor, rationale_label: torch.Tensor
    ) -> torch.Tensor:
        """CE over the Q->A candidates + CE over the QA->R candidates."""
        return F.cross_entropy(qa, answer_label.long()) + F.cross_entropy(qar, rationale_label.long())

    def training_outputs(self, batch: Mapping[str, Any], batch_idx: int) -> StepOutput:
        """Loss and the candidate scores of Q->A and QA->R (a softmax over candidates each)."""
        qa, qar = self(batch)
        loss = self.loss(qa, qar, batch["answer_label"], batch["rationale_label"])
        return StepOutput(loss, qa.shape[0], [Logits(qa), Logits(qar)])

    def _eval_step(self, batch: Mapping[str, Any], stage: str, metric: VCRAccuracy) -> None:
        qa, qar = self(batch)
        loss = self.loss(qa, qar, batch["answer_label"], batch["rationale_label"])
        self.log(f"{stage}/loss", loss, batch_size=qa.shape[0], sync_dist=True)
        metric.update(qa, qar, batch["answer_label"], batch["rationale_label"])

    def _eval_epoch_end(self, stage: str, metric: VCRAccuracy) -> None:
        values = metric.compute()
        for name, value in values.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "q2ar")
        self.log(f"{stage}/acc", values["q2ar"])
        metric.reset()

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_metric)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val", self.val_metric)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_metric)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test", self.test_metric)

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """Chosen ``[answer, rationale]`` per record, ``[B, 2]``."""
        qa, qar = self(batch)
        return torch.stack([qa.argmax(dim=1), qar.argmax(dim=1)], dim=1)
