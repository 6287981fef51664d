"""Collators for every task of ``docs/dev/batch-contract.md``, built on :class:`~lightning_tickets.data.VLCollator`.

* :class:`VLBatchCollator` -- :class:`VLCollator` that also pads ``pixel_values`` (+ ``pixel_mask``),
  ``token_type_ids``, ``mlm_labels`` (with -100), ``img_masked`` and ``img_soft_label``;
* :class:`PairCollator` -- NLVR2: ``{"pair": [left, right], "labels"}`` records -> one batch of ``2B`` rows
  (left examples first) + ``labels [B]``;
* :class:`MultipleChoiceCollator` -- VCR: ``{"qa": [4 examples], "qar": [4 examples], ...}`` -> ``{"qa": 4B rows,
  "qar": 4B rows, "answer_label": [B], "rationale_label": [B], "num_choices": 4}``.

Example:
    >>> import torch
    >>> ex = lambda n, h, w: {"input_ids": torch.arange(1, n + 1), "pixel_values": torch.ones(3, h, w)}
    >>> batch = PairCollator()([{"pair": [ex(2, 32, 64), ex(3, 64, 32)], "labels": 1}])
    >>> batch["input_ids"].shape, batch["pixel_values"].shape, batch["pixel_mask"].shape, batch["labels"].tolist()
    (torch.Size([2, 3]), torch.Size([2, 3, 64, 64]), torch.Size([2, 64, 64]), [1])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lightning_tickets.data.collate import VLCollator, pad_sequence

#: Per-example keys padded by :class:`VLBatchCollator` on top of :class:`VLCollator`, with their pad value.
EXTRA_PADDED = {"token_type_ids": 0, "mlm_labels": -100, "img_masked": 0, "img_soft_label": 0}


def pad_images(
    images: Sequence[torch.Tensor], masks: Sequence[torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad ``[3, H_i, W_i]`` images (bottom/right) to ``[B, 3, H_max, W_max]``; mask ``[B, H_max, W_max]``
    long, 1 at real pixels (or the given per-image ``[H_i, W_i]`` masks).

    Example:
        >>> x, m = pad_images([torch.ones(3, 2, 1), torch.ones(3, 1, 2)])
        >>> x.shape, m.tolist()
        (torch.Size([2, 3, 2, 2]), [[[1, 0], [1, 0]], [[1, 1], [0, 0]]])
    """
    if not images:
        raise ValueError("pad_images needs at least one image")
    h = max(int(x.shape[-2]) for x in images)
    w = max(int(x.shape[-1]) for x in images)
    out = images[0].new_zeros((len(images), images[0].shape[0], h, w))
    mask = torch.zeros(len(images), h, w, dtype=torch.long)
    for i, x in enumerate(images):
        out[i, :, : x.shape[-2], : x.shape[-1]] = x
        mask[i, : x.shape[-2], : x.shape[-1]] = 1 if masks is None else masks[i].long()
    return out, mask


class VLBatchCollator(VLCollator):
    """:class:`VLCollator` plus the contract's image-pixel and pre-training keys.

    ``pixel_values [3, H, W]`` -> ``[B, 3, H_max, W_max]`` + ``pixel_mask [B, H_max, W_max]``;
    ``token_type_ids`` / ``mlm_labels`` ``[T]`` -> ``[B, T_max]`` (pad 0 / -100); ``img_masked [R]`` and
    ``img_soft_label [R, C]`` -> ``[B, R_max, ...]`` (pad ``False`` / 0). Scalar tensors (``labels``,
    ``itm_labels``, ``txt_index``, ...) are stacked by :class:`VLCollator`.

    Example:
        >>> b = VLBatchCollator(pad_token_id=0)([
        ...     {"input_ids": torch.tensor([5, 6]), "token_type_ids": torch.tensor([0, 1]), "labels": torch.tensor(2)},
        ...     {"input_ids": torch.tensor([5]), "token_type_ids": torch.tensor([0]), "labels": torch.tensor(0)}])
        >>> b["token_type_ids"].tolist(), b["labels"].tolist()
        ([[0, 1], [0, 0]], [2, 0])
    """

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        special = set(EXTRA_PADDED) | {"pixel_values", "pixel_mask"}
        keys = list(examples[0].keys())
        batch = super().__call__([{k: v for k, v in e.items() if k not in special} for e in examples])
        for key, pad in EXTRA_PADDED.items():
            if key in keys:
                batch[key], _ = pad_sequence([e[key] for e in examples], pad)
        if "pixel_values" in keys:
            masks = [e["pixel_mask"] for e in examples] if "pixel_mask" in keys else None
            batch["pixel_values"], batch["pixel_mask"] = pad_images([e["pixel_values"] for e in examples], masks)
        return batch


def _record_extras(records: Sequence[Mapping[str, Any]], skip: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in records[0]:
        if key in skip:
            continue
        values = [r[key] for r in records]
        if all(isinstance(v, torch.Tensor) for v in values) and len({tuple(v.shape) for v in values}) == 1:
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out


class PairCollator:
    """NLVR2 collator: records ``{"pair": [left, right], "labels": 0/1, ...}`` -> one batch of ``2B`` rows (rows
    ``0..B-1`` the left examples, ``B..2B-1`` the right ones) + ``labels [B]`` long; other record-level keys
    (e.g. ``identifier``) -> lists of length ``B``.

    Args:
        pad_token_id: padding id of ``input_ids``.
    """

    def __init__(self, pad_token_id: int = 0) -> None:
        self.inner = VLBatchCollator(pad_token_id=pad_token_id)

    def __call__(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        for i, r in enumerate(records):
            if len(r["pair"]) != 2:
                raise ValueError(f"PairCollator: record {i} has {len(r['pair'])} examples in 'pair', expected 2")
        batch = self.inner([r["pair"][0] for r in records] + [r["pair"][1] for r in records])
        batch["labels"] = torch.as_tensor([int(r["labels"]) for r in records], dtype=torch.long)
        batch.update(_record_extras(records, {"pair", "labels"}))
        return batch


class MultipleChoiceCollator:
    """VCR collator: records ``{"qa": [n examples], "qar": [n examples], "answer_label", "rationale_label"}`` ->
    ``{"qa": batch of nB rows, "qar": batch of nB rows, "answer_label": [B], "rationale_label": [B],
    "num_choices": n}`` (rows ``n*i .. n*i+n-1`` belong to record ``i``); other record keys -> lists.

    Args:
        pad_token_id: padding id of ``input_ids``.
    """

    def __init__(self, pad_token_id: int = 0) -> None:
        self.inner = VLBatchCollator(pad_token_id=pad_token_id)

    def __call__(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        n = len(records[0]["qa"])
        for i, r in enumerate(records):
            if len(r["qa"]) != n or len(r["qar"]) != n:
                raise ValueError(
                    f"MultipleChoiceCollator: record {i} has {len(r['qa'])} qa / {len(r['qar'])} qar choices, "
                    f"expected {n}"
                )
        batch: dict[str, Any] = {
            "qa": self.inner([ex for r in records for ex in r["qa"]]),
            "qar": self.inner([ex for r in records for ex in r["qar"]]),
            "answer_label": torch.as_tensor([int(r["answer_label"]) for r in records], dtype=torch.long),
            "rationale_label": torch.as_tensor([int(r["rationale_label"]) for r in records], dtype=torch.long),
            "num_choices": n,
        }
        batch.update(_record_extras(records, {"qa", "qar", "answer_label", "rationale_label"}))
        return batch
