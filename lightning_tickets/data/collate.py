"""Batching of variable-length vision-and-language examples: padding + masks + dense soft targets.

An example is a dict. Known keys are padded and get a mask:

* ``input_ids`` (``[T]`` long) -> ``input_ids`` ``[B, T_max]`` padded with ``pad_token_id`` + ``attention_mask``;
* ``img_feat`` (``[R, D]``) and ``img_pos_feat`` (``[R, 7]``) -> zero-padded ``[B, R_max, .]`` +
  ``img_attention_mask``;
* ``answer_ids`` / ``answer_scores`` (``[k]``, sparse soft scores) -> ``targets`` ``[B, num_answers]``.

Other tensors of equal shape are stacked; anything else (ints, strings) is returned as a list.

Example:
    >>> import torch
    >>> collate = VLCollator(num_answers=4)
    >>> batch = collate([
    ...     {"input_ids": torch.tensor([101, 7, 102]), "img_feat": torch.ones(2, 3), "img_pos_feat": torch.ones(2, 7),
    ...      "answer_ids": torch.tensor([1]), "answer_scores": torch.tensor([1.0]), "question_id": 5},
    ...     {"input_ids": torch.tensor([101, 102]), "img_feat": torch.ones(1, 3), "img_pos_feat": torch.ones(1, 7),
    ...      "answer_ids": torch.tensor([0, 3]), "answer_scores": torch.tensor([0.3, 0.6]), "question_id": 6},
    ... ])
    >>> batch["input_ids"].tolist(), batch["attention_mask"].tolist()
    ([[101, 7, 102], [101, 102, 0]], [[1, 1, 1], [1, 1, 0]])
    >>> batch["img_attention_mask"].tolist(), batch["targets"].tolist(), batch["question_id"]
    ([[1, 1], [1, 0]], [[0.0, 1.0, 0.0, 0.0], [0.30000001192092896, 0.0, 0.0, 0.6000000238418579]], [5, 6])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


def pad_sequence(seqs: Sequence[torch.Tensor], pad_value: float = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad tensors ``[n_i, ...]`` to ``[B, max n_i, ...]``; also return the ``[B, max n_i]`` long mask.

    Example:
        >>> x, m = pad_sequence([torch.tensor([1, 2]), torch.tensor([3])])
        >>> x.tolist(), m.tolist()
        ([[1, 2], [3, 0]], [[1, 1], [1, 0]])
    """
    if not seqs:
        raise ValueError("pad_sequence needs at least one tensor")
    n_max = max(s.shape[0] for s in seqs)
    out = seqs[0].new_full((len(seqs), n_max, *seqs[0].shape[1:]), pad_value)
    mask = torch.zeros(len(seqs), n_max, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = 1
    return out, mask


class VLCollator:
    """Collate function (picklable, so it works with ``num_workers > 0``).

    Args:
        num_answers: size of the dense ``targets``; required when examples carry ``answer_ids``.
        pad_token_id: padding id of ``input_ids``.
    """

    def __init__(self, num_answers: int | None = None, pad_token_id: int = 0) -> None:
        self.num_answers = num_answers
        self.pad_token_id = pad_token_id

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        keys = list(examples[0].keys())
        batch: dict[str, Any] = {}
        if "input_ids" in keys:
            batch["input_ids"], batch["attention_mask"] = pad_sequence(
                [e["input_ids"] for e in examples], self.pad_token_id
            )
        if "img_feat" in keys:
            batch["img_feat"], batch["img_attention_mask"] = pad_sequence([e["img_feat"] for e in examples])
            if "img_pos_feat" in keys:
                batch["img_pos_feat"], _ = pad_sequence([e["img_pos_feat"] for e in examples])
        if "answer_ids" in keys:
            if self.num_answers is None:
                raise ValueError("examples carry answer_ids: VLCollator needs num_answers")
            targets = torch.zeros(len(examples), self.num_answers)
            for i, e in enumerate(examples):
                targets[i, e["answer_ids"].long()] = e["answer_scores"].float()
            batch["targets"] = targets
        handled = {"input_ids", "img_feat", "img_pos_feat", "answer_ids", "answer_scores"}
        for key in keys:
            if key in handled:
                continue
            values = [e[key] for e in examples]
            if all(isinstance(v, torch.Tensor) for v in values) and len({tuple(v.shape) for v in values}) == 1:
                batch[key] = torch.stack(values)
            else:
                batch[key] = values
        return batch
