"""Tasks scored by accuracy (:class:`AccuracyTask`: NLVR2, RefCOCO+) and single-label classification on the
pooled output (:class:`LabelClassification`: the shared base of GQA and SNLI-VE).

Head: UNITER's VQA MLP ``Linear(H, 2H) -> GELU -> LayerNorm -> Linear(2H, num_classes)`` on the pooled output
(:class:`~lightning_tickets.tasks.base.VQAHead`); loss: cross-entropy on ``labels`` (``-1`` ignored by the loss,
counted as wrong by the metric); metric: accuracy (:class:`~lightning_tickets.metrics.accuracy.ArgmaxAccuracy`),
logged as ``val/acc`` / ``test/acc`` (and ``train/loss``, ``val/loss``, ``test/loss``).

Example:
    >>> import torch
    >>> from lightning_tickets.backbones import Uniter
    >>> model = LabelClassification(Uniter("tiny", img_dim=6), num_classes=4)
    >>> batch = {"input_ids": torch.tensor([[101, 5, 102]]), "img_feat": torch.randn(1, 2, 6),
    ...          "img_pos_feat": torch.rand(1, 2, 7)}
    >>> model(batch).shape
    torch.Size([1, 4])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torchmetrics import Metric

from lightning_tickets.backbones.base import VLBackbone
from lightning_tickets.metrics.accuracy import ArgmaxAccuracy
from lightning_tickets.tasks.adversarial import Logits
from lightning_tickets.tasks.base import StepOutput, TaskModule, VQAHead, cross_entropy_ignore, init_head_


class AccuracyTask(TaskModule):
    """A task scored by accuracy: the subclass sets the metrics ``val_acc`` / ``test_acc``; they are logged as
    ``val/acc`` (progress bar) and ``test/acc`` at the end of each evaluation epoch (and ``<stage>/loss``).

    The default steps are classification on ``batch["labels"]``: ``self(batch)`` gives logits, :meth:`loss` is
    :func:`~lightning_tickets.tasks.base.cross_entropy_ignore` (``-1`` ignored) and the metric takes
    ``(logits, labels)``; a task scored otherwise overrides :meth:`_eval_step` (and :meth:`training_outputs`).
    """

    val_acc: Metric
    test_acc: Metric

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


class LabelClassification(AccuracyTask):
    """Shared base of GQA and SNLI-VE: pooled output -> :class:`VQAHead` -> ``num_classes`` logits, cross-entropy
    on ``labels`` (``-1`` ignored), accuracy logged as ``<stage>/acc``.

    Args:
        backbone: any :class:`~lightning_tickets.backbones.VLBackbone`.
        num_classes: number of output classes.
        head_dropout: dropout before the last head layer.
        **kwargs: training settings (``lr``, ``warmup_steps``, ``adversarial``, ...), see
            :class:`~lightning_tickets.tasks.base.TaskModule`.
    """

    def __init__(
        self,
        backbone: VLBackbone,
        num_classes: int,
        head_dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, **kwargs)
        self.num_classes = int(num_classes)
        self.head = VQAHead(backbone.hidden_size, self.num_classes, head_dropout)
        init_head_(self.head)
        self.val_acc = ArgmaxAccuracy()
        self.test_acc = ArgmaxAccuracy()

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Class logits ``[B, num_classes]``."""
        return self.head(self.backbone(batch).pooled)

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """Predicted class indices ``[B]``."""
        return self(batch).argmax(dim=1)
