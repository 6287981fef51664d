"""N:M masks: within every group of ``M`` consecutive weights along the input dimension keep the ``N`` largest.

Example:
    >>> import torch
    >>> w = torch.tensor([[0.1, -0.9, 0.3, 0.2, 5.0, 4.0, -6.0, 0.0]])
    >>> nm_mask(w, 2, 4).int().tolist()
    [[0, 1, 1, 0, 1, 0, 1, 0]]
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from lightning_tickets.masks import num_to_prune, select_lowest

Masks = dict[str, torch.Tensor]
_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_nm(spec: str) -> tuple[int, int]:
    """``"2:4"`` -> ``(2, 4)``.

    Raises:
        ValueError: malformed, ``N < 1`` or ``N >= M`` (naming the value and the fix).

    Example:
        >>> parse_nm("2:4")
        (2, 4)
    """
    match = _NM.match(str(spec))
    if not match:
        raise ValueError(f"N:M pattern {spec!r} is malformed; write it as 'N:M', e.g. '2:4'")
    n, m = int(match.group(1)), int(match.group(2))
    if n < 1 or n >= m:
        raise ValueError(
            f"N:M pattern {spec!r} needs 1 <= N < M (N weights kept out of every M); e.g. '2:4' keeps 2 of 4"
        )
    return n, m


def nm_schedule(n: int, m: int, schedule: str | Sequence[float], rate: float) -> list[float]:
    """Round sparsities for N:M: the schedule runs up to ``1 - N/M``, reached exactly by the last round.

    Rounds before the last prune unstructured (global magnitude, keeping >= N weights in every group); the last round
    applies the N:M pattern. An explicit list must stay below ``1 - N/M``; ``1 - N/M`` is appended.

    Example:
        >>> nm_schedule(2, 4, "geometric", 0.2)
        [0.0, 0.2, 0.36, 0.488, 0.5]
        >>> nm_schedule(2, 4, [0.25], 0.2)
        [0.0, 0.25, 0.5]
    """
    from lightning_tickets.schedule import sparsity_schedule

    final = 1.0 - n / m
    if isinstance(schedule, str):
        return sparsity_schedule(final, schedule, rate)
    values = sparsity_schedule(None, list(schedule), rate)
    if values[-1] > final + 1e-9:
        raise ValueError(
            f"schedule={list(schedule)} goes past {final:g}, the sparsity of the {n}:{m} pattern reached by the last "
            f"round; use values below {final:g} (the {n}:{m} round is appended)"
        )
    return values if abs(values[-1] - final) <= 1e-9 else [*values, final]


def _grouped(t: torch.Tensor, m: int, name: str = "weight") -> torch.Tensor:
    if t.dim() < 2:
        raise ValueError(f"{name} has shape {list(t.shape)}; N:M masks need a weight with an input dimension (>= 2-D)")
    flat = t.reshape(t.shape[0], -1)
    if flat.shape[1] % m:
        raise ValueError(
            f"{name} has input dimension {flat.shape[1]} (shape {list(t.shape)}), not divisible by M={m}: leave it "
            f"out of the pruning scope (scope=dict(exclude=[...])) or use an M that divides {flat.shape[1]}"
        )
    return flat.reshape(flat.shape[0], -1, m)


@torch.no_grad()
def nm_mask(
    weight: torch.Tensor,
    n: int,
    m: int,
    alive: torch.Tensor | None = None,
    scores: torch.Tensor | None = None,
    name: str = "weight",
) -> torch.Tensor:
    """Keep the ``n`` largest ``|weight|`` (or ``scores``) of every ``m`` consecutive weights along the input dimension.

    With ``alive``, pruned entries are never kept (a group with fewer than ``n`` alive entries keeps only those), so
    the result is a subset of ``alive`` with at most ``n`` of every ``m`` kept. Ties keep the lower index.

    Raises:
        ValueError: input dimension not divisible by ``m``, or ``n >= m``.

    Example:
        >>> nm_mask(torch.tensor([[1.0, 3.0, 2.0, 0.0]]), 1, 2).tolist()
        [[False, True, True, False]]
    """
    if not 1 <= n < m:
        raise ValueError(f"N:M pattern {n}:{m} needs 1 <= N < M; e.g. 2:4")
    s = (weight.detach().abs() if scores is None else scores.detach()).to(torch.float32)
    if alive is not None:
        s = s.masked_fill(~alive.to(s.device), -1.0)
    groups = _grouped(s, m, name)
    order = torch.argsort(groups, dim=-1, descending=True, stable=True)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, order[..., :n], True)
    keep = keep.reshape(weight.shape)
    if alive is not None:
        keep &= alive.to(keep.device)
    return keep


def check_nm(params: Mapping[str, torch.Tensor], n: int, m: int) -> None:
    """Refuse weights whose input dimension is not divisible by ``m`` (before any training)."""
    for name, p in params.items():
        _grouped(p.detach()[:1] if p.dim() >= 2 else p.detach(), m, name)


@torch.no_grad()
def nm_round_masks(
    params: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor] | None,
    sparsity: float,
    n: int,
    m: int,
    final: bool,
    generator: torch.Generator | None = None,
) -> Masks:
    """Masks of one IMP round towards an N:M pattern.

    ``final``: the exact N:M pattern among the surviving weights (``N`` largest of every ``M``). Otherwise: global
    magnitude pruning to ``sparsity`` (exactly ``round(sparsity * total)`` pruned) among the weights that are not
    among the ``N`` largest of their group, so every group keeps at least ``N`` weights for the final round.
    ``generator``: random scores instead of magnitudes (random-pruning baseline).

    Example:
        >>> w = {"w": torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.1, 0.2, 0.3, 0.4]])}
        >>> nm_round_masks(w, None, 0.25, 2, 4, final=False)["w"].int().tolist()
        [[1, 1, 1, 1, 0, 0, 1, 1]]
        >>> nm_round_masks(w, None, 0.5, 2, 4, final=True)["w"].int().tolist()
        [[1, 1, 0, 0, 0, 0, 1, 1]]
    """
    names = list(params)
    alive = []
    for name in names:
        a = None if masks is None else masks.get(name)
        alive.append(torch.ones_like(params[name], dtype=torch.bool) if a is None else a.to(params[name].device))
    scores = [
        params[nm].detach().abs().float()
        if generator is None
        else torch.rand(params[nm].shape, generator=generator).to(params[nm].device)
        for nm in names
    ]
    protected = [nm_mask(s, n, m, a, scores=s, name=nm) for nm, s, a in zip(names, scores, alive)]
    if final:
        return dict(zip(names, protected))
    total = sum(p.numel() for p in params.values())
    kept = sum(int(a.sum()) for a in alive)
    k = num_to_prune(total, sparsity) - (total - kept)
    room = sum(int((a & ~p).sum()) for a, p in zip(alive, protected))
    if k < 0 or k > room:
        raise ValueError(
            f"cannot reach sparsity {sparsity:g} before the {n}:{m} round: {total - kept} of {total} weights are "
            f"pruned and {room} can still go (the {n} largest of every {m} are kept); use sparsities <= {1 - n / m:g}"
        )
    cand = [a & ~p for a, p in zip(alive, protected)]
    new = select_lowest(scores, cand, k)
    return {nm: c | p for nm, c, p in zip(names, new, protected)}


@dataclass
class NMReport:
    """How well masks follow an N:M pattern (see :func:`nm_violations`)."""

    groups: int = 0
    violations: dict[str, int] = field(default_factory=dict)


def nm_violations(masks: Mapping[str, torch.Tensor], n: int, m: int) -> NMReport:
    """Count groups of ``m`` consecutive entries with more than ``n`` kept, per tensor.

    Example:
        >>> nm_violations({"w": torch.tensor([[True, True, False, False, True, True, True, False]])}, 2, 4).violations
        {'w': 1}
    """
    report = NMReport()
    for name, mask in masks.items():
        g = _grouped(mask.to(torch.int32), m, name)
        report.groups += g.shape[0] * g.shape[1]
        bad = int((g.sum(-1) > n).sum())
        if bad:
            report.violations[name] = bad
    return report
