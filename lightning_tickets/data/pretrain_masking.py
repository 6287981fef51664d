"""Masking and negative sampling for UNITER-style pre-training (MLM, MRM, ITM).

* :func:`mask_tokens` -- masked language modelling: each non-special token is chosen with probability ``mask_prob``
  (15%, at least one per text); a chosen token becomes ``[MASK]`` (80%), a random token (10%) or stays (10%);
  ``mlm_labels`` hold the original id at chosen positions and ``-100`` elsewhere (BERT / UNITER).
* :func:`mask_regions` -- masked region modelling: each real region is masked with probability ``mask_prob`` (at
  least one); returns ``img_masked``. The features are *not* changed here: UNITER's backbone zeroes masked region
  features and adds its mask embedding itself, and :class:`~lightning_tickets.tasks.Pretraining` zeroes them for
  every backbone; the original ``img_feat`` stays the MRFR regression target.
* :func:`sample_negative_indices` / :func:`sample_itm_pairs` -- image-text matching negatives (another image).
* :class:`PretrainMasking` -- a per-example transform applying both maskings (fresh randomness per call, as
  UNITER's datasets do); pad the results with ``VLBatchCollator`` (``mlm_labels`` with -100, ``img_masked`` with
  ``False``).

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> ids = torch.tensor([101, 7, 8, 9, 10, 102])
    >>> masked, labels = mask_tokens(ids, vocab_size=1000, mask_token_id=103, mask_prob=0.5, generator=g)
    >>> bool(((labels == -100) | (labels == ids)).all()), int(labels[0]), int(labels[-1])  # specials never masked
    (True, -100, -100)
    >>> mask_regions(4, mask_prob=0.0, generator=g).sum().item()  # at least one region is masked
    1
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch

#: BERT (uncased and cased) ids of ``[PAD]``, ``[UNK]``, ``[CLS]``, ``[SEP]``, ``[MASK]``.
BERT_SPECIAL_IDS = (0, 100, 101, 102, 103)
BERT_MASK_ID = 103


def _uniform(shape: Sequence[int], generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(tuple(shape), generator=generator)


def _ensure_one(chosen: torch.Tensor, candidates: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Per row (last dim), if nothing is chosen but candidates exist, choose one candidate at random."""
    chosen = chosen.clone()
    flat_c, flat_k = chosen.view(-1, chosen.shape[-1]), candidates.view(-1, candidates.shape[-1])
    for row in range(flat_c.shape[0]):
        if not bool(flat_c[row].any()) and bool(flat_k[row].any()):
            idx = flat_k[row].nonzero().squeeze(1)
            pick = idx[int(torch.randint(len(idx), (1,), generator=generator))]
            flat_c[row, pick] = True
    return chosen


def mask_tokens(
    input_ids: torch.Tensor,
    vocab_size: int,
    mask_token_id: int = BERT_MASK_ID,
    special_token_ids: Collection[int] = BERT_SPECIAL_IDS,
    mask_prob: float = 0.15,
    attention_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask tokens of ``input_ids`` (``[T]`` or ``[B, T]``); returns ``(masked_input_ids, mlm_labels)``.

    Args:
        input_ids: token ids (CPU tensors).
        vocab_size: random replacements are drawn from ``[0, vocab_size)`` minus the special ids.
        mask_token_id: id of ``[MASK]``.
        special_token_ids: ids never masked (``[PAD]``, ``[CLS]``, ``[SEP]``, ...).
        mask_prob: probability of choosing a token (BERT/UNITER: 0.15); at least one token per text is chosen.
        attention_mask: 1 at real tokens (padding is never chosen); default: all real.
        generator: torch RNG (default: the global one).
    """
    ids = input_ids.long()
    candidates = ~torch.isin(ids, torch.as_tensor(sorted(special_token_ids), dtype=torch.long))
    if attention_mask is not None:
        candidates &= attention_mask.bool()
    chosen = (_uniform(ids.shape, generator) < mask_prob) & candidates
    chosen = _ensure_one(chosen, candidates, generator)
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    action = _uniform(ids.shape, generator)
    to_mask = chosen & (action < 0.8)
    to_random = chosen & (action >= 0.8) & (action < 0.9)
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[[i for i in special_token_ids if 0 <= i < vocab_size]] = False
    pool = allowed.nonzero().squeeze(1)
    random_ids = pool[torch.randint(len(pool), ids.shape, generator=generator)]
    masked = torch.where(to_mask, torch.full_like(ids, mask_token_id), ids)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels


def mask_regions(
    num_regions: int | torch.Tensor, mask_prob: float = 0.15, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``img_masked``: bool ``[R]`` for ``R = num_regions`` regions, or the same shape as a given bool mask of real
    regions (then only real regions are masked); at least one (real) region per row is masked (UNITER).

    Example:
        >>> mask_regions(torch.tensor([[True, True, False]]), mask_prob=1.0).tolist()
        [[True, True, False]]
    """
    real = torch.ones(int(num_regions), dtype=torch.bool) if not isinstance(num_regions, torch.Tensor) else num_regions
    real = real.bool()
    chosen = (_uniform(real.shape, generator) < mask_prob) & real
    return _ensure_one(chosen, real, generator)


def sample_negative_indices(
    positives: int | Collection[int], num_items: int, k: int = 1, generator: torch.Generator | None = None
) -> list[int]:
    """``k`` distinct indices in ``[0, num_items)`` that are not ``positives`` (e.g. images not matching a caption).

    Example:
        >>> sorted(sample_negative_indices(2, num_items=4, k=3))
        [0, 1, 3]
    """
    pos = {int(positives)} if isinstance(positives, int) else {int(p) for p in positives}
    pool = [i for i in range(num_items) if i not in pos]
    if k > len(pool):
        raise ValueError(f"cannot sample {k} negatives from {num_items} items with {len(pos)} positives")
    order = torch.randperm(len(pool), generator=generator)[:k]
    return [pool[int(j)] for j in order]


def sample_itm_pairs(
    txt2img: Sequence[int], num_images: int, neg_prob: float = 0.5, generator: torch.Generator | None = None
) -> tuple[list[int], list[int]]:
    """For each caption, its own image (``itm_labels`` 1) or, with probability ``neg_prob``, another random image
    (0), as UNITER's ITM data. Returns ``(img_index, itm_labels)``.

    Example:
        >>> sample_itm_pairs([0, 1, 2], num_images=3, neg_prob=0.0)
        ([0, 1, 2], [1, 1, 1])
    """
    images, labels = [], []
    for pos in txt2img:
        if float(_uniform((), generator)) < neg_prob and num_images > 1:
            images.append(sample_negative_indices(int(pos), num_images, 1, generator)[0])
            labels.append(0)
        else:
            images.append(int(pos))
            labels.append(1)
    return images, labels


class PretrainMasking:
    """Per-example transform adding ``mlm_labels`` (and masked ``input_ids``) and ``img_masked``.

    Args:
        vocab_size: tokenizer vocabulary size.
        mask_token_id: ``[MASK]`` id.
        special_token_ids: ids never masked.
        mlm_prob: token masking probability (0 disables MLM masking).
        mrm_prob: region masking probability (0 disables MRM masking; needs ``img_feat`` in the example).
        seed: seed of a private generator (``None``: the global torch RNG, seeded per DataLoader worker).

    Example:
        >>> import torch
        >>> t = PretrainMasking(vocab_size=1000, seed=0)
        >>> ex = t({"input_ids": torch.tensor([101, 7, 8, 102]), "img_feat": torch.randn(3, 4)})
        >>> sorted(ex), ex["img_masked"].dtype
        (['img_feat', 'img_masked', 'input_ids', 'mlm_labels'], torch.bool)
    """

    def __init__(
        self,
        vocab_size: int,
        mask_token_id: int = BERT_MASK_ID,
        special_token_ids: Collection[int] = BERT_SPECIAL_IDS,
        mlm_prob: float = 0.15,
        mrm_prob: float = 0.15,
        seed: int | None = None,
    ) -> None:
        self.vocab_size = int(vocab_size)
        self.mask_token_id = int(mask_token_id)
        self.special_token_ids = tuple(int(i) for i in special_token_ids)
        self.mlm_prob = float(mlm_prob)
        self.mrm_prob = float(mrm_prob)
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, **kwargs: Any) -> PretrainMasking:
        """Build from a ``transformers`` tokenizer (vocabulary size, ``[MASK]`` id, special ids)."""
        return cls(len(tokenizer), tokenizer.mask_token_id, tuple(tokenizer.all_special_ids), **kwargs)

    def __call__(self, example: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(example)
        if self.mlm_prob > 0:
            out["input_ids"], out["mlm_labels"] = mask_tokens(
                example["input_ids"],
                self.vocab_size,
                self.mask_token_id,
                self.special_token_ids,
                self.mlm_prob,
                generator=self.generator,
            )
        if self.mrm_prob > 0 and "img_feat" in example:
            out["img_masked"] = mask_regions(int(example["img_feat"].shape[0]), self.mrm_prob, self.generator)
        return out
