"""GQA as single-label classification over an answer vocabulary, and the shared classification base.

Head: UNITER's VQA MLP ``Linear(H, 2H) -> GELU -> LayerNorm -> Linear(2H, num_answers)`` on the pooled output
(:class:`~lightning_tickets.tasks.vqa.VQAHead`); loss: cross-entropy on ``labels`` (``-1`` = answer outside the
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

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from lightning_tickets.adversarial import AdversarialConfig, Logits
from lightning_tickets.backbones.base import VLBackbone
from lightning_tickets.metrics.accuracy import ArgmaxAccuracy
from lightning_tickets.tasks.base import StepOutput, TaskModule
from lightning_tickets.tasks.vqa import VQAHead


def init_head_(module: nn.Module, std: float = 0.02) -> None:
    """BERT-style initialisation of a task head in place: ``N(0, std)`` Linear weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def cross_entropy_ignore(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -1) -> torch.Tensor:
    """Mean cross-entropy over the labels ``!= ignore_index``; a graph-connected 0 when there are none.

    Example:
        >>> float(cross_entropy_ignore(torch.zeros(2, 3), torch.tensor([-1, -1])))
        0.0
    """
    labels = labels.long()
    if not bool((labels != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=ignore_index)


class LabelClassification(TaskModule):
    """Shared base of GQA and SNLI-VE: pooled output -> :class:`VQAHead` -> ``num_classes`` logits, cross-entropy
    on ``labels`` (``-1`` ignored), accuracy logged as ``<stage>/acc``.

    Args:
        backbone: any :class:`~lightning_tickets.backbones.VLBackbone`.
        num_classes: number of output classes.
        lr, head_lr_multiplier, weight_decay, warmup_steps, lr_schedule, new_backbone_params: see
            :class:`~lightning_tickets.tasks.base.TaskModule`.
        head_dropout: dropout before the last head layer.
        adversarial: VILLA-style adversarial training, see :class:`~lightning_tickets.tasks.base.TaskModule`.
    """

    def __init__(
        self,
        backbone: VLBackbone,
        num_classes: int,
        lr: float = 5e-5,
        head_lr_multiplier: float = 10.0,
        weight_decay: float = 0.01,
        warmup_steps: int | float = 0,
        lr_schedule: Literal["linear", "constant"] = "linear",
        new_backbone_params: str | Sequence[str] = "auto",
        head_dropout: float = 0.0,
        adversarial: AdversarialConfig | None = None,
    ) -> None:
        super().__init__(
            backbone,
            lr=lr,
            head_lr_multiplier=head_lr_multiplier,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            lr_schedule=lr_schedule,
            new_backbone_params=new_backbone_params,
            adversarial=adversarial,
        )
        self.num_classes = int(num_classes)
        self.head = VQAHead(backbone.hidden_size, self.num_classes, head_dropout)
        init_head_(self.head)
        self.val_acc = ArgmaxAccuracy()
        self.test_acc = ArgmaxAccuracy()

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Class logits ``[B, num_classes]``."""
        return self.head(self.backbone(batch).pooled)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the labelled rows (``labels == -1`` ignored)."""
        return cross_entropy_ignore(logits, labels)

    def training_outputs(self, batch: Mapping[str, Any], batch_idx: int) -> StepOutput:
        """Loss and class logits (a softmax over classes)."""
        logits = self(batch)
        return StepOutput(self.loss(logits, batch["labels"]), logits.shape[0], [Logits(logits)])

    def _eval_step(self, batch: Mapping[str, Any], stage: str, metric: ArgmaxAccuracy) -> None:
        logits = self(batch)
        self.log(f"{stage}/loss", self.loss(logits, batch["labels"]), batch_size=logits.shape[0], sync_dist=True)
        metric.update(logits, batch["labels"])

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_acc)

    def on_validation_epoch_end(self) -> None:
        self.log("val/acc", self.val_acc.compute(), prog_bar=True)
        self.val_acc.reset()

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_acc)

    def on_test_epoch_end(self) -> None:
        self.log("test/acc", self.test_acc.compute())
        self.test_acc.reset()

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """Predicted class indices ``[B]``."""
        return self(batch).argmax(dim=1)


class GQA(LabelClassification):
    """GQA fine-tuning (balanced split; accuracy on testdev in the paper).

    Args:
        backbone: any :class:`~lightning_tickets.backbones.VLBackbone`.
        num_answers: size of the answer vocabulary (1842 as LXMERT's GQA answer set; the datamodule's
            ``num_answers``).
        lr, head_lr_multiplier, weight_decay, warmup_steps, lr_schedule, new_backbone_params, head_dropout,
            adversarial: see :class:`LabelClassification`.
    """

    def __init__(
        self,
        backbone: VLBackbone,
        num_answers: int = 1842,
        lr: float = 5e-5,
        head_lr_multiplier: float = 10.0,
        weight_decay: float = 0.01,
        warmup_steps: int | float = 0,
        lr_schedule: Literal["linear", "constant"] = "linear",
        new_backbone_params: str | Sequence[str] = "auto",
        head_dropout: float = 0.0,
        adversarial: AdversarialConfig | None = None,
    ) -> None:
        super().__init__(
            backbone,
            num_classes=num_answers,
            lr=lr,
            head_lr_multiplier=head_lr_multiplier,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            lr_schedule=lr_schedule,
            new_backbone_params=new_backbone_params,
            head_dropout=head_dropout,
            adversarial=adversarial,
        )
        self.num_answers = self.num_classes
