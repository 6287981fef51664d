"""Mask maths on plain tensors: exact global / layer-wise magnitude and random pruning.

Masks are ``bool`` tensors (``True`` = kept) with the parameter's shape and device. Every function prunes *exactly*
``round(sparsity * N)`` weights in total (already-pruned weights count and stay pruned) and breaks ties
deterministically: among equal scores, the weight that comes first (tensor order, then flat index) is pruned first.

The threshold is found by an exact radix select over the float32 bit patterns of the scores (non-negative floats
order like their integer bits): two counting passes with ``bincount`` over 2**15 and 2**16 bins, chunked, so no
concatenation of all scores is ever materialised.

Example:
    >>> import torch
    >>> w = {"a": torch.tensor([0.1, -0.5, 0.3]), "b": torch.tensor([[0.2, 0.05], [0.9, -0.4]])}
    >>> m = global_magnitude_masks(w, sparsity=0.5)
    >>> m["a"].tolist(), m["b"].tolist()
    ([False, True, False], [[False, False], [True, True]])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import torch

Masks = dict[str, torch.Tensor]
Reduce = Callable[[torch.Tensor], torch.Tensor]

_CHUNK = 1 << 20  # elements per counting chunk: bounds temporary memory to ~12 MB whatever the model size
_HI_BINS = 1 << 16  # bits 31..16 (sign bit included so that negative scores are detected)
_LO_BINS = 1 << 16  # bits 15..0


def num_to_prune(total: int, sparsity: float) -> int:
    """Number of weights pruned at ``sparsity`` out of ``total``: ``round(sparsity * total)``."""
    return int(round(float(sparsity) * int(total)))


def _chunks(t: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    flat = t.reshape(-1)
    for start in range(0, flat.numel(), _CHUNK):
        yield start, flat[start : start + _CHUNK]


def _keys(chunk: torch.Tensor, absolute: bool) -> torch.Tensor:
    """Integer keys (int32) that order like the scores; ``absolute`` drops the sign bit (keys of ``|x|``)."""
    if chunk.dtype != torch.float32:
        chunk = chunk.to(torch.float32)
    keys = chunk.contiguous().view(torch.int32)
    return keys & 0x7FFFFFFF if absolute else keys


def _histogram(
    scores: list[torch.Tensor], alive: list[torch.Tensor], absolute: bool, prefix: int | None
) -> torch.Tensor:
    """Counts of alive keys per bin: over the high 16 bits (``prefix`` None), or over the low 16 bits of
    the keys whose high bits equal ``prefix`` (2**16 bins). Bin 0 of ``bincount`` collects the entries not counted."""
    bins = _HI_BINS if prefix is None else _LO_BINS
    counts = torch.zeros(bins, dtype=torch.int64)
    for score, keep in zip(scores, alive):
        flat_keep = keep.reshape(-1)
        for start, chunk in _chunks(score):
            kchunk = flat_keep[start : start + chunk.numel()]
            keys = _keys(chunk, absolute)
            hi = (keys >> 16) & 0xFFFF
            if prefix is None:
                idx = hi.add_(1).mul_(kchunk)
            else:
                idx = (keys & 0xFFFF).add_(1).mul_(hi.eq_(prefix).logical_and_(kchunk))
            counts += torch.bincount(idx, minlength=bins + 1)[1:].to("cpu")
    return counts


def _find_bin(counts: torch.Tensor, k: int) -> tuple[int, int]:
    """Bin holding the k-th smallest (1-based) and the number of keys in lower bins."""
    cum = torch.cumsum(counts, 0)
    b = int(torch.searchsorted(cum, torch.tensor([k], dtype=cum.dtype)).item())
    below = int(cum[b - 1].item()) if b > 0 else 0
    return b, below


def select_lowest(
    scores: list[torch.Tensor],
    alive: list[torch.Tensor],
    k: int,
    absolute: bool = False,
    all_reduce: Reduce | None = None,
    prefix_sum: Callable[[int], int] | None = None,
) -> list[torch.Tensor]:
    """Prune the ``k`` lowest-scoring alive entries; return new keep masks (dead entries stay pruned).

    Args:
        scores: finite scores, one tensor per parameter; non-negative unless ``absolute`` (then ``|score|`` ranks).
        alive: bool masks of currently kept entries (same shapes).
        k: how many alive entries to prune, ``0 <= k <= alive count``.
        absolute: rank by absolute value (magnitude pruning) without allocating ``|w|``.
        all_reduce: optional sum-reduction of the histograms across processes, for scores split over ranks
            (each rank passes its own shard).
        prefix_sum: with ``all_reduce``: maps this rank's count to the sum of the counts of lower ranks, so that
            ties are broken in the global order "rank 0's shard, then rank 1's, ..." (the result then equals the
            single-process result on the concatenated shards, bit for bit).
    """
    n_alive = sum(int(a.sum()) for a in alive)
    if all_reduce is not None:
        n_alive = int(all_reduce(torch.tensor([n_alive], dtype=torch.int64)).item())
    if k < 0 or k > n_alive:
        raise ValueError(f"cannot prune {k} weights: {n_alive} are still kept")
    if k == 0:
        return [a.clone() for a in alive]
    hi_counts = _histogram(scores, alive, absolute, None)
    if all_reduce is not None:
        hi_counts = all_reduce(hi_counts)
    # high bits >= 0x7F80: inf/NaN (0x7F80..0x7FFF) or a negative score (sign bit set)
    if int(hi_counts[0x7F80:].sum()) > 0:
        raise ValueError("scores must be finite and non-negative; found NaN, inf or a negative value")
    hi, below = _find_bin(hi_counts, k)
    lo_counts = _histogram(scores, alive, absolute, hi)
    if all_reduce is not None:
        lo_counts = all_reduce(lo_counts)
    lo, below_lo = _find_bin(lo_counts, k - below)
    threshold = (hi << 16) | lo
    ties_left = k - below - below_lo  # entries equal to the threshold that must still go (>= 1)
    if prefix_sum is not None:
        local_eq = 0
        for score, keep in zip(scores, alive):
            flat_keep = keep.reshape(-1)
            for start, chunk in _chunks(score):
                eq = _keys(chunk, absolute) == threshold
                local_eq += int(eq.logical_and_(flat_keep[start : start + chunk.numel()]).sum())
        ties_left = max(0, ties_left - prefix_sum(local_eq))
    out = []
    for score, keep in zip(scores, alive):
        new = torch.empty_like(keep)
        flat_new, flat_keep = new.reshape(-1), keep.reshape(-1)
        for start, chunk in _chunks(score):
            keys = _keys(chunk, absolute)
            kchunk = flat_keep[start : start + chunk.numel()]
            part = flat_new[start : start + chunk.numel()]
            torch.gt(keys, threshold, out=part)
            part.logical_and_(kchunk)
            eq = keys == threshold
            eq.logical_and_(kchunk)
            if ties_left > 0:
                n_eq = int(eq.sum())
                if n_eq <= ties_left:
                    ties_left -= n_eq
                    continue
                eq[eq.nonzero().squeeze(1)[:ties_left]] = False
                ties_left = 0
            part.logical_or_(eq)
        out.append(new)
    return out


def _alive(params: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor] | None) -> list[torch.Tensor]:
    out = []
    for name, p in params.items():
        if masks is None or name not in masks:
            out.append(torch.ones_like(p, dtype=torch.bool))
        else:
            m = masks[name]
            if m.shape != p.shape or m.dtype != torch.bool:
                raise ValueError(
                    f"mask for {name!r} has shape {tuple(m.shape)}/{m.dtype}; expected bool {tuple(p.shape)}"
                )
            out.append(m.to(p.device))
    return out


def _prune_count(total: int, alive_count: int, sparsity: float, what: str) -> int:
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity={sparsity} is outside [0, 1)")
    target = num_to_prune(total, sparsity)
    already = total - alive_count
    if target < already:
        raise ValueError(
            f"{what}: sparsity {sparsity} prunes {target} weights but {already} are already pruned; sparsity can only "
            "grow from round to round"
        )
    return target - already


@torch.no_grad()
def global_magnitude_masks(
    params: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor] | None = None,
    sparsity: float = 0.0,
    all_reduce: Reduce | None = None,
    prefix_sum: Callable[[int], int] | None = None,
) -> Masks:
    """One global threshold on ``|w|`` over all tensors: exactly ``round(sparsity * N)`` pruned in total.

    Equal to ``torch.nn.utils.prune.global_unstructured(..., pruning_method=L1Unstructured, amount=sparsity)`` applied
    to the already-masked weights (up to tie-breaking, which is deterministic here).

    With ``all_reduce`` (and ``prefix_sum``) each process passes its own shard of the scope (e.g. FSDP shards): the
    histograms are summed across processes so every rank finds the same exact threshold without gathering weights
    (see :func:`lightning_tickets.distributed.histogram_reducers`).
    """
    alive = _alive(params, masks)
    total = sum(p.numel() for p in params.values())
    n_alive = sum(int(a.sum()) for a in alive)
    if all_reduce is not None:
        both = all_reduce(torch.tensor([total, n_alive], dtype=torch.int64))
        total, n_alive = int(both[0]), int(both[1])
    k = _prune_count(total, n_alive, sparsity, "global magnitude pruning")
    new = select_lowest(
        [p.detach() for p in params.values()], alive, k, absolute=True, all_reduce=all_reduce, prefix_sum=prefix_sum
    )
    return dict(zip(params.keys(), new))


@torch.no_grad()
def layerwise_magnitude_masks(
    params: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor] | None = None, sparsity: float = 0.0
) -> Masks:
    """Per-tensor threshold on ``|w|``: each tensor keeps ``numel - round(sparsity * numel)`` weights."""
    out: Masks = {}
    for (name, p), keep in zip(params.items(), _alive(params, masks)):
        k = _prune_count(p.numel(), int(keep.sum()), sparsity, f"layer-wise pruning of {name!r}")
        out[name] = select_lowest([p.detach()], [keep], k, absolute=True)[0]
    return out


@torch.no_grad()
def random_masks(
    params: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor] | None = None,
    sparsity: float = 0.0,
    granularity: str = "global",
    generator: torch.Generator | None = None,
) -> Masks:
    """Random pruning baseline: prune uniformly at random among kept weights, to exactly the same counts as magnitude.

    ``generator`` (a CPU generator) makes the draw reproducible; scores are drawn on the CPU, one tensor at a time.
    """
    scored = {n: torch.rand(p.shape, generator=generator, dtype=torch.float32).to(p.device) for n, p in params.items()}
    if granularity == "global":
        return global_magnitude_masks(scored, masks, sparsity)
    if granularity == "layerwise":
        return layerwise_magnitude_masks(scored, masks, sparsity)
    raise ValueError(f"granularity={granularity!r} is unknown; use 'global' or 'layerwise'")


def compute_masks(
    params: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor] | None,
    sparsity: float,
    method: str = "magnitude",
    granularity: str = "global",
    generator: torch.Generator | None = None,
) -> Masks:
    """Dispatch on ``method`` ("magnitude" | "random") and ``granularity`` ("global" | "layerwise")."""
    if method == "random":
        return random_masks(params, masks, sparsity, granularity, generator)
    if method != "magnitude":
        raise ValueError(f"method={method!r} is unknown; use 'magnitude' or 'random'")
    if granularity == "global":
        return global_magnitude_masks(params, masks, sparsity)
    if granularity == "layerwise":
        return layerwise_magnitude_masks(params, masks, sparsity)
    raise ValueError(f"granularity={granularity!r} is unknown; use 'global' or 'layerwise'")


def sparsity_of(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of pruned entries over all masks."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return 0.0 if total == 0 else 1.0 - kept / total


@torch.no_grad()
def apply_masks(params: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the pruned entries in place (``p.mul_(mask)``)."""
    for name, p in params.items():
        m = masks.get(name)
        if m is not None:
            p.mul_(m)
