"""Weight snapshots (θ0 or θ at step/epoch K) and exact restore; optimizer and LR-scheduler reset.

A snapshot is a *true copy* (``clone`` into separate storage, on the CPU by default): it never aliases the live
parameters, so rewinding in round ``r`` restores the weights of the rewind point, not those of round ``r - 1``.

Example:
    >>> import torch
    >>> lin = torch.nn.Linear(3, 2)
    >>> snap = take_snapshot(dict(lin.named_parameters()))
    >>> with torch.no_grad():
    ...     _ = lin.weight.add_(1.0)
    >>> restore_snapshot(dict(lin.named_parameters()), snap)
    >>> bool(torch.equal(lin.weight, snap["weight"]))
    True
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

Snapshot = dict[str, torch.Tensor]


@dataclass(frozen=True)
class RewindPoint:
    """Where weights rewind to: ``kind`` is "init", "step", "epoch" or "none"; ``k`` the step/epoch count."""

    kind: str
    k: int = 0

    @classmethod
    def parse(cls, spec: str) -> RewindPoint:
        """Parse ``"init"``, ``"none"``, ``"step:K"`` or ``"epoch:K"`` (K a non-negative integer)."""
        if not isinstance(spec, str):
            raise ValueError(f"rewind={spec!r} must be a string: 'init', 'none', 'step:K' or 'epoch:K'")
        s = spec.strip().lower()
        if s in ("init", "none"):
            return cls(s, 0)
        m = re.fullmatch(r"(step|epoch):(\d+)", s)
        if not m:
            raise ValueError(
                f"rewind={spec!r} is malformed; use 'init' (weights at fit start), 'step:K' / 'epoch:K' (late "
                "rewinding to the weights after K steps/epochs of round 0) or 'none' (no rewinding)"
            )
        k = int(m.group(2))
        return cls("init", 0) if k == 0 else cls(m.group(1), k)

    def __str__(self) -> str:
        return self.kind if self.kind in ("init", "none") else f"{self.kind}:{self.k}"


@torch.no_grad()
def take_snapshot(params: Mapping[str, torch.Tensor], device: str | torch.device = "cpu") -> Snapshot:
    """Copy every tensor into new storage on ``device`` (never a view or alias of the live tensor)."""
    out: Snapshot = {}
    for name, p in params.items():
        copy = torch.empty(p.shape, dtype=p.dtype, device=device)
        copy.copy_(p.detach())
        out[name] = copy
    return out


@torch.no_grad()
def restore_snapshot(params: Mapping[str, torch.Tensor], snapshot: Mapping[str, torch.Tensor]) -> None:
    """Copy the snapshot back into the live tensors in place (names must match; extra live names are left alone)."""
    missing = [n for n in snapshot if n not in params]
    if missing:
        raise KeyError(f"snapshot tensors not found in the model: {missing[:5]}")
    for name, value in snapshot.items():  # check every shape before copying anything: never half-restored
        if params[name].shape != value.shape:
            shape, live = tuple(value.shape), tuple(params[name].shape)
            raise ValueError(f"snapshot tensor {name!r} has shape {shape}, model has {live}")
    for name, value in snapshot.items():
        params[name].copy_(value)


def reset_optimizers(trainer) -> None:
    """Fresh optimizers and LR schedulers (new state, step counters at 0) from ``configure_optimizers``.

    Uses the strategy's own ``setup_optimizers`` so precision plugins and DDP see the new objects.
    """
    trainer.strategy.setup_optimizers(trainer)
    from lightning.fabric.utilities.optimizer import _optimizers_to_device

    _optimizers_to_device(trainer.strategy.optimizers, trainer.strategy.root_device)
