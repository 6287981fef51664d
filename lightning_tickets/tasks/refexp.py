"""Referring expression comprehension (RefCOCO+): pick the detected region the expression refers to.

Each region's final hidden state (positions where ``BackboneOutput.image_mask`` is true, mapped back to the rows of
``img_feat`` / ``img_pos_feat``, see :func:`region_hidden_states`) is scored by ``Linear(H, 1)`` (UNITER's
per-region output); padded regions get a large negative score (masked softmax over regions). Loss: cross-entropy on
``labels`` (the index of the region with the highest IoU with the ground-truth box). Metric
(:class:`~lightning_tickets.metrics.grounding.GroundingAccuracy`): IoU(``img_pos_feat[b, argmax, :4]``,
``target_box``) >= 0.5, logged as ``val/acc`` / ``test/acc`` (plus ``train/loss``, ``val/loss``, ``test/loss``).

Region models only (UNITER, LXMERT): ViLT has patches, not boxes.

Example:
    >>> import torch
    >>> from lightning_tickets.backbones import Uniter
    >>> model = ReferringExpression(Uniter("tiny", img_dim=6))
    >>> batch = {"input_ids": torch.tensor([[101, 5, 102]] * 2), "img_feat": torch.randn(2, 3, 6),
    ...          "img_pos_feat": torch.rand(2, 3, 7), "img_attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
    ...          "labels": torch.tensor([2, 0]), "target_box": torch.rand(2, 4)}
    >>> scores = model(batch)
    >>> scores.shape, bool(scores[1, 2] < -1e3)  # the padded region of row 1 is masked out
    (torch.Size([2, 3]), True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_tickets.backbones.base import BackboneOutput, VLBackbone
from lightning_tickets.metrics.grounding import GroundingAccuracy
from lightning_tickets.tasks.adversarial import Logits
from lightning_tickets.tasks.base import StepOutput, init_head_
from lightning_tickets.tasks.classification import AccuracyTask

#: Score given to padded regions (finite, so half precision and the cross-entropy stay finite).
MASKED_SCORE = -1e4


def region_mask(batch: Mapping[str, Any]) -> torch.Tensor:
    """``[B, R]`` bool mask of real regions (``img_attention_mask``, default: all of ``img_feat``)."""
    img_feat = batch.get("img_feat")
    if img_feat is None or batch.get("img_pos_feat") is None:
        raise KeyError("region tasks need 'img_feat' [B, R, D] and 'img_pos_feat' [B, R, 7] (UNITER, LXMERT)")
    mask = batch.get("img_attention_mask")
    if mask is None:
        return torch.ones(img_feat.shape[:2], dtype=torch.bool, device=img_feat.device)
    return mask.bool()


def region_hidden_states(out: BackboneOutput, regions: torch.Tensor) -> torch.Tensor:
    """Hidden states of the real regions, aligned with the region rows: ``[B, R, H]`` (zeros at padded regions).

    The ``k``-th position of row ``b`` where ``out.image_mask`` is true is the ``k``-th real region of
    ``regions[b]`` (backbones keep the region order), whatever the layout of the sequence (UNITER: ``[text |
    regions]``, LXMERT: ``[language | vision]``).

    Example:
        >>> seq = torch.arange(5.0).view(1, 5, 1)
        >>> out = BackboneOutput(seq, seq[:, 0], torch.ones(1, 5).bool(), torch.tensor([[1, 1, 0, 0, 0]]).bool(),
        ...                      torch.tensor([[0, 0, 1, 1, 0]]).bool())
        >>> region_hidden_states(out, torch.tensor([[True, True, False]])).squeeze(-1).tolist()
        [[2.0, 3.0, 0.0]]
    """
    if not torch.equal(out.image_mask.sum(dim=1), regions.sum(dim=1).to(out.image_mask.device)):
        raise ValueError(
            "the backbone's image positions do not match the real regions of img_attention_mask (a patch-based "
            "backbone such as ViLT has no regions)"
        )
    hidden = out.sequence.new_zeros(*regions.shape, out.sequence.shape[-1])
    b_pos, pos = out.image_mask.nonzero(as_tuple=True)  # row-major: per row, increasing position
    b_reg, reg = regions.nonzero(as_tuple=True)  # row-major: per row, increasing region index
    hidden[b_reg, reg] = out.sequence[b_pos, pos]
    return hidden


class ReferringExpression(AccuracyTask):
    """RefCOCO+ fine-tuning (per-region scoring).

    Args:
        backbone: a region backbone (:class:`~lightning_tickets.backbones.Uniter` or LXMERT).
        iou_threshold: IoU for a right prediction (0.5).
        head_dropout: dropout on the region states before the head.
        **kwargs: training settings (``lr``, ``warmup_steps``, ``adversarial``, ...), see
            :class:`~lightning_tickets.tasks.base.TaskModule`.
    """

    def __init__(
        self,
        backbone: VLBackbone,
        iou_threshold: float = 0.5,
        head_dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, **kwargs)
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(backbone.hidden_size, 1))
        init_head_(self.head)
        self.val_acc = GroundingAccuracy(iou_threshold)
        self.test_acc = GroundingAccuracy(iou_threshold)

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Region scores ``[B, R]`` (padded regions: :data:`MASKED_SCORE`)."""
        regions = region_mask(batch)
        hidden = region_hidden_states(self.backbone(batch), regions)
        scores = self.head(hidden).squeeze(-1)
        return scores.masked_fill(~regions, MASKED_SCORE)

    def loss(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the masked region softmax."""
        return F.cross_entropy(scores, labels.long())

    @staticmethod
    def predicted_boxes(scores: torch.Tensor, img_pos_feat: torch.Tensor) -> torch.Tensor:
        """``[B, 4]`` box ``(x1, y1, x2, y2)`` of each row's best-scoring region."""
        best = scores.argmax(dim=1)
        return img_pos_feat[torch.arange(scores.shape[0], device=scores.device), best, :4]

    def training_outputs(self, batch: Mapping[str, Any], batch_idx: int) -> StepOutput:
        """Loss and region scores (a softmax over the real regions)."""
        scores = self(batch)
        return StepOutput(self.loss(scores, batch["labels"]), scores.shape[0], [Logits(scores)])

    def _eval_step(self, batch: Mapping[str, Any], stage: str, metric: GroundingAccuracy) -> None:
        scores = self(batch)
        if "labels" in batch:
            self.log(f"{stage}/loss", self.loss(scores, batch["labels"]), batch_size=scores.shape[0], sync_dist=True)
        metric.update(self.predicted_boxes(scores, batch["img_pos_feat"]), batch["target_box"])

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """Predicted boxes ``[B, 4]``."""
        return self.predicted_boxes(self(batch), batch["img_pos_feat"])
