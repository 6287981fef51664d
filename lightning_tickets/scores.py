"""Importance scores and the guards against layer collapse, all selected through the exact threshold of ``masks``.

A score gives every weight in scope a finite, non-negative number; a round prunes the ``round(sparsity * N)``
lowest-scoring weights (already-pruned ones count and stay pruned) with the exact radix select of
:func:`lightning_tickets.masks.select_lowest`, ties broken as everywhere else (scope order, then flat index):

- ``"magnitude"``: ``|w|`` (the default, IMP as in the paper);
- ``"random"``: uniform draws from the run's seeded CPU generator (the random-pruning baseline);
- ``"lamp"``: layer-adaptive magnitude (Lee et al., ICLR 2021): within each tensor, weights sorted by ``|w|``
  ascending (ties by flat index); the score of weight *u* is ``w_u^2 / sum(w_v^2 for v at or after u)``. The largest
  kept weight of every tensor scores exactly 1 (every other weight <= 1/2), so global LAMP never empties a tensor
  while at least one weight per tensor is kept;
- ``"taylor"``: first-order Taylor importance ``|w * dL/dw|``, summed over the optimizer steps of the round (fed by
  :func:`accumulate_taylor` after each backward pass);
- a callable ``score(name, param) -> tensor`` of ``param``'s shape (finite, >= 0).

``min_density`` (global granularity) makes each tensor keep at least ``ceil(min_density * numel)`` weights (its
highest-scoring ones) while the global count stays exact: the result equals pruning weights in global score order and
skipping those of a tensor that has reached its floor (tested against that greedy oracle).

Example:
    >>> import torch
    >>> w = {"big": torch.tensor([4.0, 3.0, 2.0, 1.0]), "tiny": torch.tensor([0.01, 0.02])}
    >>> {n: m.tolist() for n, m in guarded_masks(w, None, 0.5, absolute=True).items()}  # magnitude empties "tiny"
    {'big': [True, True, True, False], 'tiny': [False, False]}
    >>> {n: m.tolist() for n, m in guarded_masks(score_tensors("lamp", w, None), None, 0.5).items()}
    {'big': [True, True, False, False], 'tiny': [False, True]}
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from typing import Union

import torch
from lightning.pytorch.utilities import rank_zero_warn

from lightning_tickets.masks import _alive, _count_alive, _prune_count, select_lowest

__all__ = [
    "SCORES",
    "ScoreFn",
    "accumulate_taylor",
    "check_min_density",
    "collapse_message",
    "collapsed_tensors",
    "density_facts",
    "density_floor",
    "guarded_masks",
    "lamp_scores",
    "resolve_score",
    "score_name",
    "score_tensors",
    "warn_collapse",
]

#: The built-in score names.
SCORES = ("magnitude", "random", "lamp", "taylor")

ScoreFn = Callable[[str, torch.Tensor], torch.Tensor]
Score = Union[str, ScoreFn]
Masks = dict[str, torch.Tensor]


def resolve_score(score: Score) -> Score:
    """A built-in name, or a callable (given as such or as a dotted import path such as ``"my_pkg.scores.fisher"``).

    Example:
        >>> resolve_score("lamp"), resolve_score("math.fabs").__name__
        ('lamp', 'fabs')
    """
    if callable(score):
        return score
    if isinstance(score, str) and score in SCORES:
        return score
    if isinstance(score, str) and "." in score:
        module, _, attr = score.rpartition(".")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"score={score!r}: cannot import {attr!r} from {module!r} ({err})") from None
        if not callable(fn):
            raise ValueError(f"score={score!r} is not callable; give a function (name, param) -> scores")
        return fn
    raise ValueError(
        f"score={score!r} is unknown; use one of {', '.join(map(repr, SCORES))}, a callable (name, param) -> scores "
        "or its dotted import path"
    )


def score_name(score: Score) -> str:
    """The name recorded in settings and ``summary.json``: the built-in name or ``module.qualname`` of a callable."""
    if isinstance(score, str):
        return score
    return f"{getattr(score, '__module__', '?')}.{getattr(score, '__qualname__', type(score).__name__)}"


@torch.no_grad()
def lamp_scores(weight: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """LAMP scores of one tensor (float32, ``weight``'s shape); pruned entries (``keep`` False) score 0 and count as
    zero weights. Computed in float64 (one sort of the tensor: about 20 bytes per weight, transient).

    Example:
        >>> lamp_scores(torch.tensor([1.0, -2.0, 2.0, 0.0])).tolist()
        [0.1111111119389534, 0.5, 1.0, 0.0]
    """
    sq = weight.detach().double().square().reshape(-1)
    if keep is not None:
        sq.masked_fill_(~keep.reshape(-1).to(sq.device), 0.0)
    values, order = torch.sort(sq, stable=True)  # ascending |w|, ties in flat-index order
    suffix = values.flip(0).cumsum(0).flip(0)  # sum of the squares at or after each position
    ratio = torch.where(values > 0, values / suffix.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    out = torch.empty_like(sq, dtype=torch.float32)
    out[order] = ratio.float()
    return out.reshape(weight.shape)


@torch.no_grad()
def accumulate_taylor(sums: dict[str, torch.Tensor], params: Mapping[str, torch.Tensor]) -> None:
    """Add ``|w * grad|`` (float32) of every parameter that has a gradient to ``sums`` (in place).

    Call after the backward pass and before the optimizer step (gradients unscaled). Non-finite products (an
    overflowed mixed-precision step) add 0. Parameters without a gradient add nothing.
    """
    for name, p in params.items():
        g = p.grad
        if g is None:
            continue
        contribution = torch.nan_to_num_(torch.mul(p.detach(), g).abs_().float(), nan=0.0, posinf=0.0, neginf=0.0)
        acc = _sum_for(sums, name, contribution)
        if acc is None:
            sums[name] = contribution
        else:
            acc.add_(contribution)


def _sum_for(sums: Mapping[str, torch.Tensor], name: str, like: torch.Tensor) -> torch.Tensor | None:
    """``sums[name]`` on ``like``'s device (``None`` if absent), refusing one that does not fit the parameter."""
    acc = sums.get(name)
    if acc is None:
        return None
    if not isinstance(acc, torch.Tensor) or acc.shape != like.shape or acc.dtype != torch.float32:
        got = f"{tuple(acc.shape)} {acc.dtype}" if isinstance(acc, torch.Tensor) else type(acc).__name__
        raise ValueError(
            f"the accumulated Taylor scores of {name!r} are {got}, but the parameter is {tuple(like.shape)} (float32 "
            "sums expected): the run state does not belong to this model; resume from a checkpoint of this run"
        )
    if acc.device != like.device and isinstance(sums, dict):
        acc = sums[name] = acc.to(like.device)
    return acc.to(like.device)


def _call_score(fn: ScoreFn, name: str, p: torch.Tensor) -> torch.Tensor:
    s = fn(name, p.detach())
    if not isinstance(s, torch.Tensor) or tuple(s.shape) != tuple(p.shape):
        got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
        raise ValueError(
            f"score {score_name(fn)} returned {got} for {name!r}; expected a tensor of shape {tuple(p.shape)}"
        )
    s = s.detach().to(device=p.device, dtype=torch.float32) + 0.0  # a copy; -0.0 becomes +0.0
    if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise ValueError(
            f"score {score_name(fn)} returned NaN, inf or negative values for {name!r}; scores must be finite and "
            ">= 0 (e.g. return .abs() of a signed quantity)"
        )
    return s


@torch.no_grad()
def score_tensors(
    score: Score,
    params: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor] | None,
    generator: torch.Generator | None = None,
    sums: Mapping[str, torch.Tensor] | None = None,
) -> Masks:
    """The scores of every parameter for ``score`` (``"magnitude"``: the weights themselves, ranked by ``|w|``).

    ``generator``: the random draw (``"random"``: the same draws, in the same order, as
    :func:`lightning_tickets.masks.random_masks`); ``sums``: the accumulated Taylor scores (``"taylor"``; a tensor
    without gradients scores 0).
    """
    if score == "magnitude":
        return {n: p.detach() for n, p in params.items()}
    if score == "random":
        return {
            n: torch.rand(p.shape, generator=generator, dtype=torch.float32).to(p.device) for n, p in params.items()
        }
    if score == "lamp":
        return {n: lamp_scores(p, keep) for (n, p), keep in zip(params.items(), _alive(params, masks))}
    if score == "taylor":
        if not sums:
            raise RuntimeError(
                "score='taylor' has no accumulated gradients for this round: Pruner.observe must run after each "
                "backward pass (LotteryTicketCallback does it in on_before_optimizer_step); did the round run any "
                "optimizer step?"
            )
        found = {n: _sum_for(sums, n, p.detach()) for n, p in params.items()}
        return {n: torch.zeros(p.shape, device=p.device) if found[n] is None else found[n] for n, p in params.items()}
    if callable(score):
        return {n: _call_score(score, n, p) for n, p in params.items()}
    raise ValueError(f"score={score!r} is unknown; use one of {', '.join(map(repr, SCORES))} or a callable")


def density_floor(numel: int, min_density: float) -> int:
    """Weights a tensor of ``numel`` keeps at least: ``ceil(min_density * numel)`` (float noise ignored)."""
    return min(int(numel), math.ceil(round(float(min_density) * int(numel), 6)))


def check_min_density(numels: Mapping[str, int], min_density: float, sparsity: float) -> None:
    """Refuse a ``min_density`` that the final ``sparsity`` cannot honour (the floors need more weights than kept)."""
    if not min_density:
        return
    total = sum(numels.values())
    floors = sum(density_floor(n, min_density) for n in numels.values())
    kept = total - _prune_count(total, total, sparsity, "min_density check")
    if floors > kept:
        raise ValueError(
            f"min_density={min_density} needs {floors:,} kept weights over {len(numels)} tensors but sparsity "
            f"{sparsity} keeps {kept:,} of {total:,}; lower min_density (below about {1 - sparsity:.4g}) or the "
            "target sparsity"
        )


@torch.no_grad()
def guarded_masks(
    scores: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor] | None,
    sparsity: float,
    granularity: str = "global",
    min_density: float = 0.0,
    absolute: bool = False,
) -> Masks:
    """Prune the ``round(sparsity * N)`` lowest ``scores`` (``absolute``: lowest ``|score|``) among the kept weights.

    ``granularity="layerwise"``: the count per tensor. ``min_density`` (global only): each tensor keeps at least
    :func:`density_floor` of its weights, its highest-scoring ones; the global count stays exact.
    """
    names = list(scores)
    values = [scores[n] for n in names]
    alive = _alive(scores, masks)
    if granularity == "layerwise":
        if min_density:
            raise ValueError("min_density applies to granularity='global' (layer-wise keeps 1 - sparsity of each)")
        out: Masks = {}
        for n, s, a in zip(names, values, alive):
            k = _prune_count(s.numel(), _count_alive([s], [a]), sparsity, f"layer-wise pruning of {n!r}")
            out[n] = select_lowest([s], [a], k, absolute)[0]
        return out
    if granularity != "global":
        raise ValueError(f"granularity={granularity!r} is unknown; use 'global' or 'layerwise'")
    k = _prune_count(sum(s.numel() for s in values), _count_alive(values, alive), sparsity, "global pruning")
    if not min_density:
        return dict(zip(names, select_lowest(values, alive, k, absolute)))
    protected, free = [], []
    for s, a in zip(values, alive):
        n_alive = _count_alive([s], [a])
        floor = min(n_alive, density_floor(s.numel(), min_density))
        top = select_lowest([s], [a], n_alive - floor, absolute)[0]  # the tensor's `floor` highest-scoring weights
        protected.append(top)
        free.append(~top if a is None else a & ~top)
    room = _count_alive(values, free)
    if k > room:
        raise ValueError(
            f"min_density={min_density}: sparsity {sparsity} must prune {k:,} more weights but only {room:,} can go "
            "without taking a tensor below min_density; lower min_density or the target sparsity"
        )
    chosen = select_lowest(values, free, k, absolute)
    return {n: c | p for n, c, p in zip(names, chosen, protected)}


def collapsed_tensors(densities: Mapping[str, tuple[int, int]], threshold: float | None) -> dict[str, float]:
    """``{name: density}`` of the tensors that (nearly) collapsed: density below ``threshold`` times the scope's
    overall density (an emptied tensor always counts); ``threshold=None`` or 0: none.

    Relative to the overall density, so that a uniformly sparse scope (layer-wise pruning, or 99 % global sparsity)
    flags nothing while one tensor emptied far ahead of the rest does.

    Example:
        >>> collapsed_tensors({"pooler": (10, 147456), "layer": (30000, 100000)}, 0.05)
        {'pooler': 6.781684027777778e-05}
    """
    if not threshold or not densities:
        return {}
    total = sum(t for _, t in densities.values())
    overall = sum(k for k, _ in densities.values()) / max(1, total)
    return {n: k / t for n, (k, t) in densities.items() if t > 0 and (k == 0 or k / t < threshold * overall)}


def density_facts(densities: Mapping[str, tuple[int, int]], threshold: float | None) -> dict:
    """The per-tensor facts of one round for its ``summary.json`` row, small for any number of tensors: the sparsest
    tensor (``{"name", "kept", "total", "density"}``) and the collapsed ones (see :func:`collapsed_tensors`).

    Example:
        >>> density_facts({"a": (1, 4), "b": (3, 4)}, 0.05)
        {'sparsest_tensor': {'name': 'a', 'kept': 1, 'total': 4, 'density': 0.25}, 'collapsed_tensors': {}}
    """
    sized = {n: kt for n, kt in densities.items() if kt[1] > 0}
    if not sized:
        return {"sparsest_tensor": None, "collapsed_tensors": {}}
    name = min(sized, key=lambda n: sized[n][0] / sized[n][1])  # first of equal densities, in scope order
    kept, total = sized[name]
    return {
        "sparsest_tensor": {"name": name, "kept": kept, "total": total, "density": kept / total},
        "collapsed_tensors": collapsed_tensors(densities, threshold),
    }


def collapse_message(densities: Mapping[str, tuple[int, int]], threshold: float | None, round_: int) -> str | None:
    """The warning for a round whose new masks collapse tensors (``None`` when none collapsed), naming at most 5."""
    bad = collapsed_tensors(densities, threshold)
    if not bad:
        return None
    total = sum(t for _, t in densities.values())
    overall = sum(k for k, _ in densities.values()) / max(1, total)
    shown = [
        f"{n} keeps {densities[n][0]:,} of {densities[n][1]:,} weights ({d:.3%})" for n, d in list(bad.items())[:5]
    ]
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    return (
        f"layer collapse in round {round_}: {'; '.join(shown)}{more}, while the scope keeps {overall:.2%}. A tensor "
        "pruned (nearly) empty cuts the signal through it. Guard it with score='lamp' or min_density=..., or leave it "
        "out of the scope (docs/scores.md)"
    )


def warn_collapse(densities: Mapping[str, tuple[int, int]], threshold: float | None, round_: int) -> None:
    """Warn (rank 0, ``UserWarning``) when the masks of round ``round_`` collapse tensors (see
    :func:`collapse_message`)."""
    message = collapse_message(densities, threshold, round_)
    if message is not None:
        rank_zero_warn(message)
