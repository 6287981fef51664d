"""NLVR2: is a sentence true of a pair of images? UNITER's "pair" setting (no paired attention).

A batch holds ``2B`` rows (``PairCollator``: rows ``0..B-1`` are the left image-text examples, rows ``B..2B-1`` the
right ones, row ``B + i`` pairs with row ``i``) plus ``labels [B]``. The backbone runs **once** on all ``2B`` rows;
the pooled outputs of each pair are concatenated ``[pooled_left | pooled_right]`` (``[B, 2H]``) and classified by
``Linear(2H, 2H) -> GELU -> LayerNorm -> Linear(2H, 2)``; loss: cross-entropy on ``labels``; metric: accuracy,
logged as ``val/acc`` / ``test/acc`` (plus ``train/loss``, ``val/loss``, ``test/loss``).

This is UNITER's ``UniterForNlvr2Pair`` head; the "paired-attention" variant (``UniterForNlvr2PairedAttn``, an
extra attention layer between the two sequences, +~0.5 point in UNITER's paper) is not built.

ViLT gives the left and right images different modality types (1 and 2): pass ``image_token_types=[1, 2]`` and build
``Vilt(..., modality_type_vocab_size=3)``; the task then adds ``image_token_type_idx`` to the batch.

Example:
    >>> import torch
    >>> from lightning_tickets.backbones import Uniter
    >>> model = NLVR2(Uniter("tiny", img_dim=6))
    >>> batch = {"input_ids": torch.tensor([[101, 5, 102]] * 4), "img_feat": torch.randn(4, 2, 6),
    ...          "img_pos_feat": torch.rand(4, 2, 7), "labels": torch.tensor([0, 1])}
    >>> model(batch).shape  # 2 records from 4 rows
    torch.Size([2, 2])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lightning_tickets.backbones.base import VLBackbone
from lightning_tickets.metrics.accuracy import ArgmaxAccuracy
from lightning_tickets.tasks.base import init_head_
from lightning_tickets.tasks.classification import AccuracyTask


class PairHead(nn.Sequential):
    """``Linear(2H, 2H) -> GELU -> LayerNorm -> Dropout -> Linear(2H, num_classes)`` on ``[left | right]``."""

    def __init__(self, hidden_size: int, num_classes: int = 2, dropout: float = 0.0) -> None:
        super().__init__(
            nn.Linear(2 * hidden_size, 2 * hidden_size),
            nn.GELU(),
            nn.LayerNorm(2 * hidden_size, eps=1e-12),
            nn.Dropout(dropout),
            nn.Linear(2 * hidden_size, num_classes),
        )


def pair_rows(pooled: torch.Tensor, num_pairs: int) -> torch.Tensor:
    """``[2B, H]`` (left rows, then right rows) -> ``[B, 2H]`` rows ``[left_i | right_i]``.

    Example:
        >>> pair_rows(torch.tensor([[1.0], [2.0], [3.0], [4.0]]), 2).tolist()
        [[1.0, 3.0], [2.0, 4.0]]
    """
    if pooled.shape[0] != 2 * num_pairs:
        raise ValueError(
            f"NLVR2 expects 2B rows (left examples then right examples) for B={num_pairs} labels, got "
            f"{pooled.shape[0]} rows: collate with PairCollator"
        )
    return torch.cat([pooled[:num_pairs], pooled[num_pairs:]], dim=-1)


class NLVR2(AccuracyTask):
    """NLVR2 fine-tuning with the pair head.

    Args:
        backbone: any :class:`~lightning_tickets.backbones.VLBackbone`.
        image_token_types: ``[left_type, right_type]`` put into ``batch["image_token_type_idx"]`` (ViLT's NLVR2
            recipe: ``[1, 2]``); ``None`` (default) leaves the batch alone (UNITER, LXMERT).
        head_dropout: dropout before the last head layer.
        **kwargs: training settings (``lr``, ``warmup_steps``, ``adversarial``, ...), see
            :class:`~lightning_tickets.tasks.base.TaskModule`.
    """

    def __init__(
        self,
        backbone: VLBackbone,
        image_token_types: list[int] | None = None,
        head_dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, **kwargs)
        if image_token_types is not None and len(image_token_types) != 2:
            raise ValueError(f"image_token_types must be [left_type, right_type], got {image_token_types}")
        self.image_token_types = None if image_token_types is None else [int(t) for t in image_token_types]
        self.head = PairHead(backbone.hidden_size, 2, head_dropout)
        init_head_(self.head)
        self.val_acc = ArgmaxAccuracy()
        self.test_acc = ArgmaxAccuracy()

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Logits ``[B, 2]`` (``B = len(batch["labels"])``, or half the rows when there are no labels)."""
        rows = batch["input_ids"].shape[0]
        num_pairs = int(batch["labels"].shape[0]) if "labels" in batch else rows // 2
        if self.image_token_types is not None and "image_token_type_idx" not in batch:
            left, right = self.image_token_types
            types = torch.tensor([left] * num_pairs + [right] * num_pairs, device=batch["input_ids"].device)
            batch = {**batch, "image_token_type_idx": types}
        pooled = self.backbone(batch).pooled
        return self.head(pair_rows(pooled, num_pairs))

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """Predicted labels ``[B]`` (1 = the sentence is true)."""
        return self(batch).argmax(dim=1)
