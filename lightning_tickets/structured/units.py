"""Structured pruning of whole units: importance scores of heads and neurons, global selection, per-weight masks.

A head's importance is the L1 norm of its query/key/value rows and attention-output columns, a neuron's the L1 norm
of its intermediate row and output column; selection is global with a floor of one unit per block (see
:mod:`lightning_tickets.structured`).

Example:
    >>> parse_granularity("heads"), is_structured("heads+neurons")
    (('heads', None), True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from lightning_tickets.masks import num_to_prune
from lightning_tickets.structured.model import AttentionBlock, FeedForward, Masks, Structure
from lightning_tickets.structured.nm import parse_nm

STRUCTURED = ("heads", "neurons", "heads+neurons")


def is_structured(granularity: str) -> bool:
    """Whether ``granularity`` prunes heads and/or neurons."""
    return granularity in STRUCTURED


def parse_granularity(granularity: str) -> tuple[str, tuple[int, int] | None]:
    """Validate a callback granularity: ``("global" | "layerwise" | "heads" | "neurons" | "heads+neurons", None)`` or
    ``("n:m", (N, M))``.

    Example:
        >>> parse_granularity("heads"), parse_granularity("2:4")
        (('heads', None), ('n:m', (2, 4)))
    """
    g = str(granularity)
    if g in ("global", "layerwise", *STRUCTURED):
        return g, None
    if ":" in g:
        return "n:m", parse_nm(g)
    raise ValueError(
        f"granularity={granularity!r} is unknown; use 'global' or 'layerwise' (unstructured), 'heads', 'neurons', "
        "'heads+neurons' (structured) or an N:M pattern such as '2:4'"
    )


# ---------------------------------------------------------------------------------------------- importance
def _weight(params: Mapping[str, torch.Tensor], module: str) -> torch.Tensor:
    w = params.get(f"{module}.weight")
    if w is None:
        raise KeyError(f"{module}.weight is not among the given weights (is it in the pruning scope?)")
    return w.detach()


def head_scores(params: Mapping[str, torch.Tensor], block: AttentionBlock) -> torch.Tensor:
    """L1 norm of every head: ``sum |w|`` over its query/key/value rows and its attention-output columns.

    Example:
        >>> b = AttentionBlock("a", "q", "k", "v", "o", "a", num_heads=2, head_size=1)
        >>> p = {"q.weight": torch.tensor([[1.0], [2.0]]), "k.weight": torch.ones(2, 1), "v.weight": torch.ones(2, 1),
        ...      "o.weight": torch.tensor([[3.0, -4.0]])}
        >>> head_scores(p, b).tolist()
        [6.0, 8.0]
    """
    h, d = block.num_heads, block.head_size
    total = torch.zeros(h, dtype=torch.float64)
    for name in (block.query, block.key, block.value):
        w = _weight(params, name)
        _check_rows(w, h * d, name, block)
        total += w.abs().reshape(h, -1).sum(1, dtype=torch.float64).cpu()
    w = _weight(params, block.output)
    if w.shape[-1] != h * d:
        raise ValueError(f"{block.output}.weight has {w.shape[-1]} input columns; {block.name} has {h}x{d} heads")
    total += w.abs().reshape(w.shape[0], h, d).sum((0, 2), dtype=torch.float64).cpu()
    return total


def _check_rows(w: torch.Tensor, rows: int, name: str, block: AttentionBlock) -> None:
    if w.shape[0] != rows:
        raise ValueError(
            f"{name}.weight has {w.shape[0]} rows; {block.name} has {block.num_heads} heads of {block.head_size}"
        )


def neuron_scores(params: Mapping[str, torch.Tensor], ffn: FeedForward) -> torch.Tensor:
    """L1 norm of every FFN neuron: its intermediate row plus its output column.

    Example:
        >>> f = FeedForward("f", "i", "o", size=2)
        >>> p = {"i.weight": torch.tensor([[1.0, -1.0], [0.5, 0.0]]), "o.weight": torch.tensor([[0.0, 2.0]])}
        >>> neuron_scores(p, f).tolist()
        [2.0, 2.5]
    """
    wi, wo = _weight(params, ffn.input), _weight(params, ffn.output)
    if wi.shape[0] != ffn.size or wo.shape[-1] != ffn.size:
        raise ValueError(f"{ffn.name}: weights {list(wi.shape)} / {list(wo.shape)} do not match {ffn.size} neurons")
    return wi.abs().sum(1, dtype=torch.float64).cpu() + wo.abs().sum(0, dtype=torch.float64).cpu()


def _head_cols(mask: torch.Tensor, block: AttentionBlock) -> torch.Tensor:
    return mask.reshape(mask.shape[0], block.num_heads, block.head_size)


def unit_alive(masks: Mapping[str, torch.Tensor] | None, unit: AttentionBlock | FeedForward) -> torch.Tensor:
    """Bool per head / neuron: ``True`` unless all of its residual-writing weights (attention-output columns,
    FFN output column) are pruned — a unit whose output weights are all zero contributes nothing."""
    if isinstance(unit, AttentionBlock):
        m = None if masks is None else masks.get(f"{unit.output}.weight")
        if m is None:
            return torch.ones(unit.num_heads, dtype=torch.bool)
        return _head_cols(m, unit).any(2).any(0).cpu()
    m = None if masks is None else masks.get(f"{unit.output}.weight")
    if m is None:
        return torch.ones(unit.size, dtype=torch.bool)
    return m.any(0).cpu()


# ---------------------------------------------------------------------------------------------- selection
def select_units(
    scores: Sequence[torch.Tensor], alive: Sequence[torch.Tensor], n_pruned: int, floor: int = 1, what: str = "units"
) -> list[torch.Tensor]:
    """Keep masks after pruning the lowest-scoring units globally until ``n_pruned`` are pruned in total.

    Dead units (``alive`` False) stay pruned and count. Every group keeps at least ``floor`` units (its best ones).
    Among equal scores the earlier unit (group order, then index) is pruned first.

    Raises:
        ValueError: if ``n_pruned`` is below the number already pruned or above what the floor allows.

    Example:
        >>> scores = [torch.tensor([3.0, 1.0]), torch.tensor([0.2, 0.5])]
        >>> alive = [torch.ones(2, dtype=torch.bool)] * 2
        >>> [k.tolist() for k in select_units(scores, alive, 2)]  # block 2's best head survives the floor
        [[True, False], [False, True]]
    """
    total = sum(int(a.numel()) for a in alive)
    dead = total - sum(int(a.sum()) for a in alive)
    if n_pruned < dead:
        raise ValueError(f"cannot prune {n_pruned} {what}: {dead} are already pruned (pruning only grows)")
    protected = []
    for s, a in zip(scores, alive):
        p = torch.zeros_like(a)
        idx = torch.nonzero(a).squeeze(1)
        if len(idx) and floor > 0:
            # best alive units; among ties the later one (the one a global pass would prune last)
            order = torch.argsort(s[idx].flip(0), descending=True, stable=True)
            p[idx.flip(0)[order[:floor]]] = True
        protected.append(p)
    candidates = [a & ~p for a, p in zip(alive, protected)]
    room = sum(int(c.sum()) for c in candidates)
    k = n_pruned - dead
    if k > room:
        groups = len(alive)
        raise ValueError(
            f"cannot prune {n_pruned} of {total} {what}: every one of the {groups} blocks keeps at least {floor}, so "
            f"at most {total - groups * floor} ({(total - groups * floor) / max(total, 1):.4g} of them) can be pruned"
        )
    flat = torch.cat([s.to(torch.float64) for s in scores]) if scores else torch.zeros(0)
    cand = torch.cat(candidates) if candidates else torch.zeros(0, dtype=torch.bool)
    cand_idx = torch.nonzero(cand).squeeze(1)
    order = torch.argsort(flat[cand_idx], stable=True)
    prune = torch.zeros_like(cand)
    prune[cand_idx[order[:k]]] = True
    out, start = [], 0
    for a in alive:
        n = a.numel()
        out.append(a & ~prune[start : start + n])
        start += n
    return out


def max_prunable(structure: Structure, kind: str) -> tuple[int, int]:
    """``(total units, most that can be pruned with the one-per-block floor)`` for ``"heads"`` or ``"neurons"``."""
    if kind == "heads":
        return structure.num_heads, structure.num_heads - len(structure.attention)
    return structure.num_neurons, structure.num_neurons - len(structure.ffn)


def check_structured_sparsity(structure: Structure, granularity: str, sparsity: float) -> None:
    """Refuse a sparsity that would prune all heads / neurons of some block (naming the largest allowed value)."""
    for kind in _kinds(granularity):
        total, most = max_prunable(structure, kind)
        blocks = len(structure.attention) if kind == "heads" else len(structure.ffn)
        if total == 0:
            raise ValueError(f"granularity={granularity!r}: the pruning scope contains no complete {kind[:-1]} unit")
        want = num_to_prune(total, sparsity)
        if want > most:
            raise ValueError(
                f"granularity={granularity!r}: sparsity {sparsity:g} removes {want} of {total} {kind}, but each of the "
                f"{blocks} blocks keeps at least one, so at most {most} ({most / total:.4g}) can be removed; use "
                f"target_sparsity <= {most / total:.4g}"
            )


def _kinds(granularity: str) -> tuple[str, ...]:
    if granularity == "heads":
        return ("heads",)
    if granularity == "neurons":
        return ("neurons",)
    if granularity == "heads+neurons":
        return ("heads", "neurons")
    raise ValueError(f"granularity={granularity!r} is not structured; use 'heads', 'neurons' or 'heads+neurons'")


@torch.no_grad()
def structured_masks(
    params: Mapping[str, torch.Tensor],
    structure: Structure,
    masks: Mapping[str, torch.Tensor] | None,
    sparsity: float,
    granularity: str = "heads",
    generator: torch.Generator | None = None,
) -> Masks:
    """Per-weight masks that prune ``round(sparsity * units)`` heads and/or neurons (global, >= 1 per block).

    Args:
        params: weights by parameter name (the pruning scope; must contain every weight of ``structure``).
        structure: attention blocks / FFNs to prune (names match ``params`` keys minus ``.weight``).
        masks: current masks (``None`` = dense); pruned units stay pruned, other entries are kept as they are.
        sparsity: fraction of heads (and/or of neurons) pruned, in ``[0, 1)``.
        granularity: ``"heads"``, ``"neurons"`` or ``"heads+neurons"`` (the same fraction of each).
        generator: if given, units are ranked by random scores instead of magnitude (random-pruning baseline).

    Returns:
        a mask for every name in ``params`` (those outside ``structure`` are unchanged / all-True).

    Example:
        >>> b = AttentionBlock("a", "q", "k", "v", "o", "a", num_heads=2, head_size=1)
        >>> p = {"q.weight": torch.tensor([[1.0], [2.0]]), "k.weight": torch.ones(2, 1), "v.weight": torch.ones(2, 1),
        ...      "o.weight": torch.tensor([[3.0, -4.0]])}
        >>> m = structured_masks(p, Structure((b,)), None, 0.5)
        >>> m["q.weight"].tolist(), m["o.weight"].tolist()
        ([[False], [True]], [[False, True]])
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(
            f"sparsity={sparsity} is outside [0, 1): pruning every head or neuron would cut the network; every block "
            "keeps at least one"
        )
    check_structured_sparsity(structure, granularity, sparsity)
    out: Masks = {}
    for name, p in params.items():
        m = None if masks is None else masks.get(name)
        out[name] = torch.ones_like(p, dtype=torch.bool) if m is None else m.to(p.device).clone()
    kinds = _kinds(granularity)
    if "heads" in kinds and structure.attention:
        blocks = structure.attention
        scores = [_scores(head_scores(params, b), generator) for b in blocks]
        alive = [unit_alive(masks, b) for b in blocks]
        keep = select_units(scores, alive, num_to_prune(structure.num_heads, sparsity), what="heads")
        for b, k in zip(blocks, keep):
            rows = (~k).repeat_interleave(b.head_size)
            for lin in (b.query, b.key, b.value):
                out[f"{lin}.weight"][rows.to(out[f"{lin}.weight"].device)] = False
            out[f"{b.output}.weight"][:, rows.to(out[f"{b.output}.weight"].device)] = False
    if "neurons" in kinds and structure.ffn:
        units = structure.ffn
        scores = [_scores(neuron_scores(params, f), generator) for f in units]
        alive = [unit_alive(masks, f) for f in units]
        keep = select_units(scores, alive, num_to_prune(structure.num_neurons, sparsity), what="neurons")
        for f, k in zip(units, keep):
            dead = ~k
            out[f"{f.input}.weight"][dead.to(out[f"{f.input}.weight"].device)] = False
            out[f"{f.output}.weight"][:, dead.to(out[f"{f.output}.weight"].device)] = False
    return out


def _scores(scores: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return scores
    return torch.rand(scores.shape, generator=generator, dtype=torch.float64)
