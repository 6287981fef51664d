"""Where masks and snapshots live: one :class:`MaskStore` per parameter layout, chosen once when a fit starts.

- :class:`MaskStore` — plain (replicated) parameters: single device or DDP. Masks are full bool tensors on the
  parameters' devices; a new mask is computed once and broadcast from rank 0 (ranks never disagree).
- :class:`ShardedMaskStore` — FSDP2 (``fully_shard``) DTensor parameters: masks and snapshots hold this rank's local
  shards; thresholds come from histograms summed over ranks; tickets and checkpoints gather full tensors.

The callback calls the same methods on either and never asks which layout it has (:func:`mask_store_for` decides).
All the maths is in :mod:`lightning_tickets.masks` / :mod:`lightning_tickets.structured` (through
:class:`~lightning_tickets.pruner.Pruner`), the collectives in :mod:`lightning_tickets.distributed` and
:mod:`lightning_tickets.sharded`, the snapshot copies in :mod:`lightning_tickets.rewind`.

Example:
    >>> import torch
    >>> from lightning_tickets.pruner import Pruner
    >>> lin = torch.nn.Linear(2, 2, bias=False)
    >>> store = mask_store_for({"weight": lin.weight}, Pruner("global"))
    >>> masks = store.compute(None, 0.5, final=True)
    >>> store.apply(masks); store.sparsity(masks)
    0.5
    >>> int((lin.weight == 0).sum())
    2
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from lightning_tickets.distributed import all_reduce_sum, broadcast_masks, broadcast_tensors_, is_distributed
from lightning_tickets.masks import sparsity_of
from lightning_tickets.pruner import Pruner
from lightning_tickets.rewind import restore_snapshot, take_snapshot
from lightning_tickets.sharded import (
    check_shardable,
    gather_masks,
    gather_tensors,
    global_sparsity,
    is_sharded,
    local,
    local_slices,
    local_tensors,
    reshard,
    scatter_masks,
    sharded_masks,
)

__all__ = ["MaskStore", "ShardedMaskStore", "mask_store_for", "named_parameters"]

Masks = dict[str, torch.Tensor]


class MaskStore:
    """Masks over plain (replicated) parameters: computed on every rank, rank 0's broadcast.

    Args:
        params: the parameters in scope, by name (their order is the masks' order).
        pruner: the mask maths (see :class:`~lightning_tickets.pruner.Pruner`).
        cpu_float_masks: apply CPU masks as a cached float copy (faster ``_foreach_mul_`` on CPU).
    """

    sharded = False

    def __init__(self, params: Mapping[str, torch.nn.Parameter], pruner: Pruner, cpu_float_masks: bool = True):
        self.params = dict(params)
        self.pruner = pruner
        self.cpu_float_masks = cpu_float_masks
        self._factors: tuple[Masks, list[torch.Tensor]] | None = None  # derived cache of the applied masks

    def describe(self) -> str:
        """A phrase for the start-of-run log line ("" for the plain layout)."""
        return ""

    # -- masks
    def ones(self) -> Masks:
        """All-True masks (the dense round's ticket)."""
        return {n: torch.ones_like(local(p), dtype=torch.bool) for n, p in self.params.items()}

    @torch.no_grad()
    def compute(self, masks: Masks | None, target: float, final: bool) -> Masks:
        """The next round's masks from the current weights; identical on every rank (rank 0's)."""
        new = self.pruner(self.params, masks, target, final)
        return broadcast_masks(new) if is_distributed() else new

    @torch.no_grad()
    def apply(self, masks: Masks | None) -> None:
        """Zero the pruned weights in place (``masks`` is replaced at every round, never mutated: cache by id)."""
        if not masks:
            return
        params = [local(self.params[n]) for n in masks]
        cache = self._factors
        if cache is None or cache[0] is not masks:
            fast = self.cpu_float_masks
            factors = [m.to(p.dtype) if fast and p.device.type == "cpu" else m for p, m in zip(params, masks.values())]
            cache = self._factors = (masks, factors)
        torch._foreach_mul_(params, cache[1])

    def release(self) -> None:
        """Free the float mask copies (end of fit)."""
        self._factors = None

    def sparsity(self, masks: Mapping[str, torch.Tensor]) -> float:
        """Fraction pruned over the whole scope."""
        return sparsity_of(masks)

    def count_sum(self, counts: torch.Tensor) -> torch.Tensor:
        """Counts taken on this rank's masks summed over the whole scope (sharded: over all ranks' shards)."""
        return counts

    def densities(self, masks: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, int]]:
        """``{name: (kept, total)}`` per tensor over the whole scope (full tensors, every rank)."""
        return {n: (int(m.count_nonzero()), m.numel()) for n, m in masks.items()}

    def full_masks(self, masks: Masks) -> Masks:
        """Full masks for a ticket or a checkpoint (sharded: a collective, the result kept on rank 0)."""
        return masks

    def broadcast_full(self, full: Masks) -> Masks:
        """Rank 0's full masks on every rank (a fixed ticket: ranks never disagree)."""
        return broadcast_masks(full) if is_distributed() else dict(full)

    def local_masks(self, full: Masks) -> Masks:
        """This rank's masks from full masks (a fixed ticket, a checkpoint), on the parameters' devices."""
        return {n: m.to(self.params[n].device) for n, m in full.items()}

    # -- weights
    def broadcast_weights(self, params: Mapping[str, torch.Tensor]) -> None:
        """Make the replicated weights identical on every rank (rank 0's): θ0 before the snapshot."""
        broadcast_tensors_({n: p for n, p in params.items() if not is_sharded(p)})

    def snapshot(self, params: Mapping[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
        """A true copy (never an alias) of ``params`` on ``device``: the rewind point."""
        return take_snapshot(local_tensors(params), device)

    def rewind(self, params: Mapping[str, torch.Tensor], snapshot: Mapping[str, torch.Tensor]) -> None:
        """Copy the snapshot back into the live weights."""
        restore_snapshot(local_tensors({n: params[n] for n in snapshot}), snapshot)

    def full_snapshot(self, snapshot: dict[str, torch.Tensor], params: Mapping[str, torch.Tensor]) -> dict:
        """The snapshot as full tensors (a checkpoint)."""
        return snapshot

    def local_snapshot(self, full: dict, params: Mapping[str, torch.Tensor], device: str) -> dict:
        """This rank's snapshot from a checkpoint's full tensors."""
        return {n: t.to(device) for n, t in full.items()}


class ShardedMaskStore(MaskStore):
    """Masks and snapshots over FSDP2 local shards (see :mod:`lightning_tickets.sharded`)."""

    sharded = True

    def __init__(self, params: Mapping[str, torch.nn.Parameter], pruner: Pruner, cpu_float_masks: bool = True):
        problem = pruner.sharding_problem()
        if problem is not None:
            raise ValueError(
                f"{problem} is not supported on sharded (FSDP2) parameters yet: they take granularity='global' or "
                "'layerwise' with score='magnitude' or 'random' and no min_density; use those, or train with "
                "strategy='ddp'"
            )
        super().__init__(params, pruner, cpu_float_masks)

    def describe(self) -> str:
        return ", sharded: masks and snapshot per local shard"

    @torch.no_grad()
    def compute(self, masks: Masks | None, target: float, final: bool) -> Masks:
        p = self.pruner
        return sharded_masks(self.params, masks, target, p.method, p.kind, p.generator)

    def sparsity(self, masks: Mapping[str, torch.Tensor]) -> float:
        return global_sparsity(masks)

    def count_sum(self, counts: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(counts)

    def densities(self, masks: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, int]]:
        # every weight lives in exactly one rank's shard: sum the local counts (no gather of the masks)
        names = list(masks)
        kept = all_reduce_sum(torch.tensor([int(masks[n].count_nonzero()) for n in names], dtype=torch.int64))
        return {n: (int(k), self.params[n].numel()) for n, k in zip(names, kept.tolist())}

    def full_masks(self, masks: Masks) -> Masks:
        return gather_masks(masks, self.params, dst=0)

    def local_masks(self, full: Masks) -> Masks:
        return scatter_masks(full, self.params)

    def full_snapshot(self, snapshot: dict[str, torch.Tensor], params: Mapping[str, torch.Tensor]) -> dict:
        return gather_tensors(snapshot, params, dst=0)

    def local_snapshot(self, full: dict, params: Mapping[str, torch.Tensor], device: str) -> dict:
        return local_slices(full, params, device=device)


def named_parameters(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """``named_parameters()``, with FSDP2 modules resharded first so that every parameter is its sharded DTensor
    (FSDP2 leaves the root's parameters unsharded after a validation forward) and the next forward all-gathers
    whatever is written into the shards (rewinding, masking). Plain modules: just ``named_parameters()``."""
    reshard(module)
    return dict(module.named_parameters())


def mask_store_for(params: Mapping[str, torch.nn.Parameter], pruner: Pruner, cpu_float_masks: bool = True) -> MaskStore:
    """The store for this layout: :class:`ShardedMaskStore` when the scope's parameters are DTensors, else
    :class:`MaskStore` (``check_shardable`` refuses mixed or non-``Shard`` layouts with a clear error)."""
    cls = ShardedMaskStore if check_shardable(params) else MaskStore
    return cls(params, pruner, cpu_float_masks)
