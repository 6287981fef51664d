"""Sharded parameters (FSDP2 ``fully_shard`` / DTensor): masks, snapshots and tickets per local shard.

With FSDP2 each rank holds a slice (its *local shard*, ``p.to_local()``) of every sharded parameter ``p`` (a
``DTensor``). Everything here works on those local shards, so no rank ever needs the full model:

- masks are bool tensors with the local shard's shape (:func:`sharded_masks`); the global magnitude threshold is
  found with the histogram select of :mod:`lightning_tickets.masks`, each rank counting its shard and the
  histograms summed across ranks (:func:`lightning_tickets.distributed.histogram_reducers`). Exact ties are pruned
  in rank order (rank 0's shard first), then tensor order, then flat index within the shard;
- snapshots and rewinding copy local shards (:func:`local_tensors` + :mod:`lightning_tickets.rewind`);
- :func:`gather_masks` / :func:`gather_tensors` assemble full tensors (a ticket, a checkpoint) from the shards, and
  :func:`scatter_masks` / :func:`local_slices` cut a full tensor (a fixed ticket, a resumed state) into this rank's
  shard, using DTensor's own layout (uneven shards included).

All functions also accept plain tensors (unsharded parameters), for which they are the identity; in a single
process nothing is communicated.

Example:
    >>> import torch
    >>> w = {"w": torch.tensor([[0.1, -2.0], [0.3, 0.05]])}
    >>> local_tensors(w)["w"] is w["w"]  # a plain tensor is its own local shard
    True
    >>> sharded_masks(w, None, sparsity=0.5)["w"].tolist()
    [[False, True], [True, False]]
    >>> global_sparsity({"w": torch.tensor([True, False, False, False])})
    0.75
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lightning_tickets.distributed import all_reduce_sum, histogram_reducers, is_distributed
from lightning_tickets.masks import Masks, global_magnitude_masks

__all__ = [
    "check_shardable",
    "gather_masks",
    "gather_tensors",
    "global_sparsity",
    "is_sharded",
    "local",
    "local_slices",
    "local_tensors",
    "reshard",
    "scatter_masks",
    "sharded_masks",
]


def _dtensor_cls() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return None
    return DTensor


def is_sharded(t: Any) -> bool:
    """True for a ``DTensor`` (e.g. a parameter of a module passed to FSDP2's ``fully_shard``).

    Example:
        >>> is_sharded(torch.zeros(2))
        False
    """
    cls = _dtensor_cls()
    return cls is not None and isinstance(t, cls)


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of ``t`` (``t.to_local()``, which shares storage), or ``t`` itself if it is not sharded.

    In-place ops on the result (``mul_``, ``copy_``) change the sharded parameter; take it anew after each step.

    Example:
        >>> t = torch.ones(3)
        >>> local(t) is t
        True
    """
    if is_sharded(t):
        with torch.no_grad():
            return t.to_local()  # type: ignore[attr-defined]
    return t


def local_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{name: local(t)}``: views of this rank's shards (plain tensors pass through unchanged).

    Example:
        >>> list(local_tensors({"a": torch.zeros(2)}))
        ['a']
    """
    return {n: local(t) for n, t in tensors.items()}


def reshard(module: nn.Module) -> None:
    """Put every FSDP2 module of ``module`` back in its sharded state (``FSDPModule.reshard()``).

    FSDP2 leaves the root module's parameters unsharded after a forward without backward (validation), and the
    unsharded copy is what the next forward uses. Call this before reading or writing local shards outside the
    training step (rewinding, re-masking), so that the next forward all-gathers the modified shards. No-op for
    modules without FSDP2.

    Example:
        >>> reshard(torch.nn.Linear(2, 2))  # nothing to do
    """
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return
    for m in module.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


def check_shardable(params: Mapping[str, torch.Tensor]) -> bool:
    """Check that per-shard masks can represent ``params``; return True if they are sharded (DTensors).

    Either no parameter is a DTensor (replicated training: returns False), or every one is, with only ``Shard``
    placements, so that each weight lives on exactly one rank and per-rank counts add up to the global count.

    Raises:
        ValueError: a mix of DTensor and plain parameters, or a ``Replicate`` / ``Partial`` placement (e.g. tensor
            parallelism that replicates a scope weight); the message names the parameter and the fix.

    Example:
        >>> check_shardable({"w": torch.zeros(2, 2)})
        False
    """
    sharded = [n for n, p in params.items() if is_sharded(p)]
    if not sharded:
        return False
    plain = [n for n in params if n not in set(sharded)]
    if plain:
        raise ValueError(
            f"the pruning scope mixes sharded (DTensor) and plain parameters: {plain[:5]} are not sharded while "
            f"{sharded[:3]} are. Apply fully_shard to the root module too (fully_shard(model) after the blocks) or "
            "leave the plain ones out of the scope"
        )
    from torch.distributed.tensor import Shard

    for n, p in params.items():
        bad = [pl for pl in p.placements if not isinstance(pl, Shard)]  # type: ignore[attr-defined]
        if bad:
            raise ValueError(
                f"parameter {n!r} has placements {tuple(p.placements)}: per-shard masks need every placement to be "  # type: ignore[attr-defined]
                f"Shard(dim) (each weight on exactly one rank), but {bad[0]} is not. Use FSDP2 data parallelism "
                "(ModelParallelStrategy(tensor_parallel_size=1)) or leave this parameter out of the scope"
            )
    return True


@torch.no_grad()
def sharded_masks(
    params: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor] | None,
    sparsity: float,
    method: str = "magnitude",
    granularity: str = "global",
    generator: torch.Generator | None = None,
) -> Masks:
    """The next masks over the local shards of ``params``, equal to the unsharded result gathered.

    ``masks`` (or ``None``) and the result are bool tensors with the local shards' shapes. Every rank must call this
    with the same names in the same order. ``"global"`` sums the histograms over all ranks (one exact threshold,
    ``round(sparsity * N)`` pruned over the whole model); ``"layerwise"`` does the same per tensor. ``"random"``
    draws the scores of the FULL tensor from ``generator`` (identically seeded on every rank) and keeps this rank's
    slice, so the draw does not depend on the number of ranks.

    Args:
        params: name -> parameter (DTensor or plain tensor).
        masks: current local masks, or ``None`` (dense).
        sparsity: target fraction pruned, in ``[0, 1)``.
        method: ``"magnitude"`` or ``"random"``.
        granularity: ``"global"`` or ``"layerwise"``.
        generator: CPU generator for ``method="random"``.

    Example:
        >>> w = {"a": torch.tensor([3.0, 1.0]), "b": torch.tensor([0.5, 2.0])}
        >>> {n: m.tolist() for n, m in sharded_masks(w, None, 0.5).items()}
        {'a': [True, False], 'b': [False, True]}
    """
    if method not in ("magnitude", "random"):
        raise ValueError(f"method={method!r} is unknown; use 'magnitude' or 'random'")
    if granularity not in ("global", "layerwise"):
        raise ValueError(
            f"granularity={granularity!r} is not supported on sharded parameters; use 'global' or 'layerwise'"
        )
    if method == "random":
        scores = {
            n: _local_slice(torch.rand(p.shape, generator=generator, dtype=torch.float32), p) for n, p in params.items()
        }
    else:
        scores = local_tensors(params)
    reducers = histogram_reducers() if is_distributed() else {}
    if granularity == "global":
        return global_magnitude_masks(scores, masks, sparsity, **reducers)
    out: Masks = {}
    for n, s in scores.items():
        prev = None if masks is None else {n: masks[n]}
        out.update(global_magnitude_masks({n: s}, prev, sparsity, **reducers))
    return out


def global_sparsity(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction pruned over all ranks' local masks (collective when distributed; plain ``sparsity_of`` otherwise).

    Example:
        >>> global_sparsity({"a": torch.tensor([True, True]), "b": torch.tensor([False, True])})
        0.25
    """
    kept = sum(int(m.count_nonzero()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    both = all_reduce_sum(torch.tensor([kept, total], dtype=torch.int64))
    kept, total = int(both[0]), int(both[1])
    return 0.0 if total == 0 else 1.0 - kept / total


def _full(local_part: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The full tensor assembled from every rank's ``local_part`` laid out like the DTensor ``like`` (collective)."""
    from torch.distributed.tensor import DTensor

    dt = DTensor.from_local(
        local_part.to(like.device),
        like.device_mesh,  # type: ignore[attr-defined]
        like.placements,  # type: ignore[attr-defined]
        shape=like.shape,
        stride=like.stride(),
    )
    return dt.full_tensor()


@torch.no_grad()
def gather_tensors(
    parts: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor], dst: int | None = 0
) -> dict[str, torch.Tensor]:
    """Full CPU tensors from local shards ``parts`` laid out like ``params`` (one collective per sharded tensor).

    Every rank must call it with the same names in the same order. The result is kept on rank ``dst`` only (other
    ranks get ``{}``; ``dst=None``: every rank keeps it). Tensors of plain parameters are returned as they are.
    Peak memory: one full tensor at a time on every rank, plus the kept results on ``dst``.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> gather_tensors({"w": torch.zeros(2)}, {"w": w})["w"].tolist()
        [0.0, 0.0]
    """
    keep = dst is None or not is_distributed() or torch.distributed.get_rank() == dst
    out: dict[str, torch.Tensor] = {}
    for name, part in parts.items():
        p = params[name]
        full = _full(part, p) if is_sharded(p) else part
        if keep:
            out[name] = full.detach().to("cpu", copy=full is part)
    return out


def gather_masks(
    masks: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor], dst: int | None = 0
) -> dict[str, torch.Tensor]:
    """Full bool masks (CPU) from local shard masks, kept on rank ``dst`` (``{}`` elsewhere): a full-model ticket.

    Masks travel as ``uint8`` (gloo has no bool collectives). See :func:`gather_tensors`.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(3))
        >>> gather_masks({"w": torch.tensor([True, False, True])}, {"w": w})["w"].tolist()
        [True, False, True]
    """
    as_bytes = {n: m.to(torch.uint8) if is_sharded(params[n]) else m for n, m in masks.items()}
    return {n: m.bool() for n, m in gather_tensors(as_bytes, params, dst).items()}


def _local_slice(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This rank's part of the full tensor ``full`` for the DTensor ``like`` (no communication: local chunking)."""
    if not is_sharded(like):
        return full
    from torch.distributed.tensor import distribute_tensor

    dt = distribute_tensor(full.detach().to(like.device), like.device_mesh, like.placements, src_data_rank=None)  # type: ignore[attr-defined]
    return dt.to_local().contiguous()


@torch.no_grad()
def local_slices(
    tensors: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor], device: str | torch.device | None = None
) -> dict[str, torch.Tensor]:
    """Cut full tensors (identical on every rank, e.g. loaded from a file) into this rank's shards of ``params``.

    Shapes are checked against the parameters' global shapes. ``device``: where the slices go (default: the
    parameter's device).

    Raises:
        KeyError: a name is not in ``params``.
        ValueError: a full tensor's shape differs from its parameter's.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> local_slices({"w": torch.tensor([1.0, 2.0])}, {"w": w})["w"].tolist()
        [1.0, 2.0]
    """
    out: dict[str, torch.Tensor] = {}
    for name, full in tensors.items():
        if name not in params:
            raise KeyError(f"{name!r} is not a parameter here; known names include {list(params)[:5]}")
        p = params[name]
        if tuple(full.shape) != tuple(p.shape):
            raise ValueError(f"{name!r}: full tensor has shape {list(full.shape)}, the parameter {list(p.shape)}")
        part = _local_slice(full, p)
        out[name] = part.to(device if device is not None else local(p).device)
    return out


def scatter_masks(full_masks: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor]) -> Masks:
    """Local bool masks of ``params`` from full masks (e.g. a fixed ticket) identical on every rank.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(2, 2))
        >>> scatter_masks({"w": torch.tensor([[True, False], [False, True]])}, {"w": w})["w"].tolist()
        [[True, False], [False, True]]
    """
    for n, m in full_masks.items():
        if m.dtype != torch.bool:
            raise TypeError(f"mask {n!r} has dtype {m.dtype}; expected torch.bool (convert with `mask != 0`)")
    return local_slices(full_masks, params)
