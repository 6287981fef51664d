"""Mask maths on plain tensors: exact global / layer-wise magnitude and random pruning.

Masks are ``bool`` tensors (``True`` = kept) with the parameter's shape and device. Every function prunes *exactly*
``round(sparsity * N)`` weights in total (already-pruned weights count and stay pruned) and breaks ties
deterministically: among equal scores, the weight that comes first (tensor order, then flat index) is pruned first.

The threshold is found by an exact radix select over the float32 bit patterns of the scores (non-negative floats
order like their integer bits), chunk by chunk: one pass counts the entries per value of the high 16 bits, a second
writes the masks straight into the new bool tensors and collects the few entries of the boundary bin, which are then
decided by their low 16 bits (see :func:`select_lowest`). No concatenation of the scores, no ``|w|`` copy: the extra
memory is a few chunk buffers plus the boundary bin (well under 1 byte per weight).

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

# Elements per chunk on the CPU: below PyTorch's parallel grain size (32768), so every op on a chunk runs in the
# calling thread. On a busy machine each OpenMP parallel region can wait a scheduler time slice for its other
# threads: on the loaded 2-core benchmark machine, passes over 1M-element chunks with 2 threads took 20-40x longer
# than the same passes on one thread (docs/performance.md). Temporaries are a few chunks (< 1 MB).
_CHUNK = 30720
_ACCEL_CHUNK = 1 << 22  # elements per chunk on accelerators (kernel launches, not threads, are the cost there)
_BINS = 1 << 16  # bins of each counting level: bits 31..16 of a key, then bits 15..0
_INVALID = 0x7F80  # high bits >= this: inf/NaN (0x7F80..0x7FFF) or sign bit set (0x8000..0xFFFF)
_MAX_CANDIDATE_FRACTION = 1 / 64  # collect the boundary bin's entries if it holds at most this share of the alive
_MIN_CANDIDATES = 1 << 16  # ... or at most this many (small scopes)


def num_to_prune(total: int, sparsity: float) -> int:
    """Number of weights pruned at ``sparsity`` out of ``total``: ``round(sparsity * total)``."""
    return int(round(float(sparsity) * int(total)))


def _chunk_size(device: torch.device) -> int:
    return _CHUNK if device.type == "cpu" else _ACCEL_CHUNK


class _Work:
    """Per-device chunk buffers reused by every chunk of a pass (no allocation per chunk), and helpers on them."""

    def __init__(self) -> None:
        self._bufs: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        self._ones: dict[torch.device, torch.Tensor] = {}

    def buf(self, device: torch.device, dtype: torch.dtype, n: int) -> torch.Tensor:
        """A scratch tensor of ``n`` elements (contents undefined; one per device and dtype)."""
        key = (device, dtype)
        b = self._bufs.get(key)
        if b is None or b.numel() < n:
            b = self._bufs[key] = torch.empty(max(n, _chunk_size(device)), dtype=dtype, device=device)
        return b[:n]

    def ones(self, device: torch.device, n: int) -> torch.Tensor:
        """``n`` int64 ones (the weights of a plain count)."""
        b = self._ones.get(device)
        if b is None or b.numel() < n:
            b = self._ones[device] = torch.ones(max(n, _chunk_size(device)), dtype=torch.int64, device=device)
        return b[:n]

    def raw(self, chunk: torch.Tensor) -> torch.Tensor:
        """The chunk's float32 bit patterns as int32: a view of a float32 chunk, a converted copy otherwise.

        Non-negative floats order like these integers; ``raw & 0x7FFFFFFF`` are the keys of ``|x|``.
        """
        if chunk.dtype != torch.float32:
            chunk = self.buf(chunk.device, torch.float32, chunk.numel()).copy_(chunk)
        return chunk.contiguous().view(torch.int32)

    def weights(self, flags: torch.Tensor) -> torch.Tensor:
        """``flags`` (bool) as int64 0/1 counting weights."""
        return self.buf(flags.device, torch.int64, flags.numel()).copy_(flags)


def _chunks(score: torch.Tensor, keep: torch.Tensor | None) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:
    """``(start, score chunk, keep chunk or None)`` over the flattened tensor, one chunk at a time."""
    flat = score.reshape(-1)
    flat_keep = None if keep is None else keep.reshape(-1)
    step = _chunk_size(score.device)
    for start in range(0, flat.numel(), step):
        end = min(start + step, flat.numel())
        yield start, flat[start:end], None if flat_keep is None else flat_keep[start:end]


def _high_mask(absolute: bool) -> int:
    """AND-mask keeping bits 30..16 (``absolute``: the sign is dropped) or 31..16 of an int32 key."""
    return 0x7FFF0000 if absolute else -0x10000  # -0x10000 == 0xFFFF0000 as int32


def _count_alive(scores: list[torch.Tensor], alive: list[torch.Tensor | None]) -> int:
    return sum(s.numel() if a is None else int(a.count_nonzero()) for s, a in zip(scores, alive))


class _Counter:
    """Histograms of ``_BINS`` int64 bins, one per device, summed into one CPU tensor by ``total()``.

    Counting is ``index_add_`` into the accumulator: unlike ``bincount`` it allocates and zero-fills nothing per
    chunk, takes int32 bins, and can weight each entry (0 = not counted).
    """

    def __init__(self) -> None:
        self._counts: dict[torch.device, torch.Tensor] = {}

    def add(self, bins: torch.Tensor, weights: torch.Tensor) -> None:
        acc = self._counts.get(bins.device)
        if acc is None:
            acc = self._counts[bins.device] = torch.zeros(_BINS, dtype=torch.int64, device=bins.device)
        acc.index_add_(0, bins, weights)

    def total(self) -> torch.Tensor:
        counts = [c.cpu() for c in self._counts.values()]
        if not counts:
            return torch.zeros(_BINS, dtype=torch.int64)
        return counts[0] if len(counts) == 1 else torch.stack(counts).sum(0)


def _bin_of(counts: torch.Tensor, k: int) -> tuple[int, int]:
    """Bin holding the k-th smallest (1-based) and the number of keys in lower bins."""
    cum = torch.cumsum(counts, 0)
    b = int(torch.searchsorted(cum, torch.tensor([k], dtype=cum.dtype)).item())
    below = int(cum[b - 1].item()) if b > 0 else 0
    return b, below


def _high_histogram(
    scores: list[torch.Tensor], alive: list[torch.Tensor | None], absolute: bool, work: _Work
) -> torch.Tensor:
    """Pass 1: counts of the alive entries per value of the key's bits 31..16 (bits 30..16 if ``absolute``)."""
    counter = _Counter()
    for score, keep in zip(scores, alive):
        for _, chunk, kc in _chunks(score, keep):
            n, dev = chunk.numel(), chunk.device
            bins = torch.bitwise_right_shift(work.raw(chunk), 16, out=work.buf(dev, torch.int32, n))
            bins.bitwise_and_(0x7FFF if absolute else 0xFFFF)
            counter.add(bins, work.ones(dev, n) if kc is None else work.weights(kc))
    return counter.total()


#: Entries of the boundary bin in global order: (tensor index, flat indices, low 16 bits of their keys) per chunk.
_Candidates = list[tuple[int, torch.Tensor, torch.Tensor]]


def _split_pass(
    scores: list[torch.Tensor],
    alive: list[torch.Tensor | None],
    out: list[torch.Tensor],
    absolute: bool,
    boundary: int,
    work: _Work,
) -> _Candidates:
    """Pass 2: write "high bits > boundary bin" into ``out`` (alive entries only) and gather the boundary bin's
    alive entries, which are decided afterwards from the low 16 bits of their keys."""
    cands: _Candidates = []
    hmask, edge = _high_mask(absolute), boundary << 16
    for i, (score, keep, new) in enumerate(zip(scores, alive, out)):
        flat_new = new.view(-1)
        for start, chunk, kc in _chunks(score, keep):
            n, dev = chunk.numel(), chunk.device
            raw = work.raw(chunk)
            high = torch.bitwise_and(raw, hmask, out=work.buf(dev, torch.int32, n))
            part = flat_new[start : start + n]
            torch.gt(high, edge, out=part)
            eq = torch.eq(high, edge, out=work.buf(dev, torch.bool, n))
            if kc is not None:
                part.logical_and_(kc)
                eq.logical_and_(kc)
            idx = eq.nonzero().squeeze(1)
            if idx.numel():
                cands.append((i, idx + start, raw[idx].bitwise_and_(0xFFFF)))
    return cands


def _low_histogram(
    scores: list[torch.Tensor], alive: list[torch.Tensor | None], absolute: bool, boundary: int, work: _Work
) -> torch.Tensor:
    """Counts of the alive entries of the boundary bin per value of the key's bits 15..0 (one pass)."""
    counter = _Counter()
    hmask, edge = _high_mask(absolute), boundary << 16
    for score, keep in zip(scores, alive):
        for _, chunk, kc in _chunks(score, keep):
            n, dev = chunk.numel(), chunk.device
            raw = work.raw(chunk)
            bins = torch.bitwise_and(raw, hmask, out=work.buf(dev, torch.int32, n))
            inside = torch.eq(bins, edge, out=work.buf(dev, torch.bool, n))
            if kc is not None:
                inside.logical_and_(kc)
            counter.add(torch.bitwise_and(raw, 0xFFFF, out=bins), work.weights(inside))
    return counter.total()


def _final_pass(
    scores: list[torch.Tensor],
    alive: list[torch.Tensor | None],
    out: list[torch.Tensor],
    absolute: bool,
    threshold: int,
    ties_left: int,
    work: _Work,
) -> None:
    """Write the masks: keep alive keys above ``threshold``, and the keys equal to it after the first ``ties_left``."""
    for score, keep, new in zip(scores, alive, out):
        flat_new = new.view(-1)
        for start, chunk, kc in _chunks(score, keep):
            n, dev = chunk.numel(), chunk.device
            raw = work.raw(chunk)
            keys = torch.bitwise_and(raw, 0x7FFFFFFF, out=work.buf(dev, torch.int32, n)) if absolute else raw
            part = flat_new[start : start + n]
            if ties_left == 0:
                torch.ge(keys, threshold, out=part)
                if kc is not None:
                    part.logical_and_(kc)
                continue
            torch.gt(keys, threshold, out=part)
            eq = torch.eq(keys, threshold, out=work.buf(dev, torch.bool, n))
            if kc is not None:
                part.logical_and_(kc)
                eq.logical_and_(kc)
            tied = eq.nonzero().squeeze(1)
            if tied.numel() <= ties_left:
                ties_left -= tied.numel()
            else:
                part[tied[ties_left:]] = True
                ties_left = 0


def select_lowest(
    scores: list[torch.Tensor],
    alive: list[torch.Tensor | None],
    k: int,
    absolute: bool = False,
    all_reduce: Reduce | None = None,
    prefix_sum: Callable[[int], int] | None = None,
) -> list[torch.Tensor]:
    """Prune the ``k`` lowest-scoring alive entries; return new keep masks (dead entries stay pruned).

    Exact radix select over the float32 bit patterns of the scores, chunk by chunk (temporaries of ``_CHUNK``
    elements, never a concatenation): pass 1 counts the alive entries per value of the high 16 bits and finds the
    bin holding the k-th smallest; pass 2 writes the masks of every entry outside that bin straight into the new
    masks and collects the (few) entries inside it, which are then decided by a count of their low 16 bits. When
    the boundary bin is crowded (more than ``max(_MIN_CANDIDATES, _MAX_CANDIDATE_FRACTION * alive)`` entries: many
    ties, very narrow value ranges), a counting pass over its low 16 bits and a final writing pass replace the
    collection, so the extra memory stays bounded in every case. Among equal scores, the entry that comes first
    (tensor order, then flat index; then rank order when sharded) is pruned first.

    Args:
        scores: finite scores, one tensor per parameter; non-negative unless ``absolute`` (then ``|score|`` ranks).
            float32 keys are exact; float16/bfloat16 convert exactly; float64 is ranked at float32 precision.
        alive: bool masks of currently kept entries (same shapes), or ``None`` for "all kept".
        k: how many alive entries to prune, ``0 <= k <= alive count``.
        absolute: rank by absolute value (magnitude pruning) without allocating ``|w|``.
        all_reduce: optional sum-reduction of the histograms across processes, for scores split over ranks
            (each rank passes its own shard).
        prefix_sum: with ``all_reduce``: maps this rank's count to the sum of the counts of lower ranks, so that
            ties are broken in the global order "rank 0's shard, then rank 1's, ..." (the result then equals the
            single-process result on the concatenated shards, bit for bit).
    """
    n_alive = _count_alive(scores, alive)
    if all_reduce is not None:
        n_alive = int(all_reduce(torch.tensor([n_alive], dtype=torch.int64)).item())
    return _select(scores, alive, k, n_alive, absolute, all_reduce, prefix_sum)


def _select(
    scores: list[torch.Tensor],
    alive: list[torch.Tensor | None],
    k: int,
    n_alive: int,
    absolute: bool,
    all_reduce: Reduce | None,
    prefix_sum: Callable[[int], int] | None,
) -> list[torch.Tensor]:
    """:func:`select_lowest` with the (global) number of alive entries already counted."""
    if k < 0 or k > n_alive:
        raise ValueError(f"cannot prune {k} weights: {n_alive} are still kept")
    if k == 0:
        return [torch.ones_like(s, dtype=torch.bool) if a is None else a.clone() for s, a in zip(scores, alive)]
    work = _Work()
    high = _high_histogram(scores, alive, absolute, work)
    if all_reduce is not None:
        high = all_reduce(high)
    if int(high[_INVALID:].sum()) > 0:
        raise ValueError("scores must be finite and non-negative; found NaN, inf or a negative value")
    boundary, below = _bin_of(high, k)
    k_in_bin = k - below  # entries of the boundary bin to prune (>= 1)
    out = [torch.empty(s.shape, dtype=torch.bool, device=s.device) for s in scores]
    if int(high[boundary]) <= max(_MIN_CANDIDATES, _MAX_CANDIDATE_FRACTION * n_alive):
        cands: _Candidates | None = _split_pass(scores, alive, out, absolute, boundary, work)
        low_bits = torch.cat([lo.cpu() for _, _, lo in cands] or [torch.zeros(0, dtype=torch.int32)])
        counter = _Counter()
        counter.add(low_bits, torch.ones(low_bits.numel(), dtype=torch.int64))
        local = counter.total()
    else:  # crowded boundary bin: count its low bits in a pass, then write every mask in a final pass
        cands, low_bits = None, None
        local = _low_histogram(scores, alive, absolute, boundary, work)
    low = all_reduce(local.clone()) if all_reduce is not None else local
    lo, below_lo = _bin_of(low, k_in_bin)
    ties_left = k_in_bin - below_lo  # entries equal to the threshold that must still go (>= 1), in global order
    if prefix_sum is not None:
        ties_left = max(0, ties_left - prefix_sum(int(local[lo])))
    if cands is None or low_bits is None:
        _final_pass(scores, alive, out, absolute, (boundary << 16) | lo, ties_left, work)
        return out
    keep_cand = low_bits > lo
    tied = (low_bits == lo).nonzero().squeeze(1)
    keep_cand[tied[ties_left:]] = True
    per_tensor: dict[int, list[torch.Tensor]] = {}
    for i, idx, _ in cands:  # in global order: the blocks of one tensor are consecutive
        per_tensor.setdefault(i, []).append(idx)
    start = 0
    for i, blocks in per_tensor.items():  # one scatter per tensor
        idx = torch.cat(blocks)
        kept = keep_cand[start : start + idx.numel()].to(idx.device)
        out[i].view(-1)[idx[kept]] = True
        start += idx.numel()
    return out


def _alive(params: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor] | None) -> list[torch.Tensor | None]:
    out: list[torch.Tensor | None] = []
    for name, p in params.items():
        if masks is None or name not in masks:
            out.append(None)
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
    scores = [p.detach() for p in params.values()]
    total = sum(s.numel() for s in scores)
    n_alive = _count_alive(scores, alive)
    if all_reduce is not None:
        both = all_reduce(torch.tensor([total, n_alive], dtype=torch.int64))
        total, n_alive = int(both[0]), int(both[1])
    k = _prune_count(total, n_alive, sparsity, "global magnitude pruning")
    new = _select(scores, alive, k, n_alive, True, all_reduce, prefix_sum)
    return dict(zip(params.keys(), new))


@torch.no_grad()
def layerwise_magnitude_masks(
    params: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor] | None = None, sparsity: float = 0.0
) -> Masks:
    """Per-tensor threshold on ``|w|``: each tensor keeps ``numel - round(sparsity * numel)`` weights."""
    out: Masks = {}
    for (name, p), keep in zip(params.items(), _alive(params, masks)):
        n_alive = _count_alive([p], [keep])
        k = _prune_count(p.numel(), n_alive, sparsity, f"layer-wise pruning of {name!r}")
        out[name] = _select([p.detach()], [keep], k, n_alive, True, None, None)[0]
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
