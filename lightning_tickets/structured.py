"""Structured (attention heads, FFN neurons) and N:M masks, as ordinary per-weight ``bool`` masks.

The callback's apply / rewind / ticket machinery works on per-weight masks; this module produces masks that zero
*whole* heads or neurons, or that follow an N:M pattern, so nothing else has to change.

* A **head** of an attention block is the ``head_size`` rows of its query, key and value weights plus the same
  ``head_size`` columns of its attention-output weight. Importance = L1 norm (sum of ``|w|``) of those weights.
* An FFN **neuron** is one row of the intermediate (up-projection) weight plus the same column of the output
  (down-projection) weight. Importance = L1 norm of those weights.
* Selection is **global** across blocks (all heads of the model compete, all neurons compete), with a floor of at
  least one head per attention block and one neuron per FFN. Already-pruned units stay pruned.
* **N:M**: within every group of ``M`` consecutive weights along the input dimension (the last dimension of a
  ``[out, in]`` weight; trailing dimensions are flattened for convolutions), keep the ``N`` largest ``|w|``.

Zeroing a head's attention-output columns removes the head's contribution exactly, whatever its biases, and so
does zeroing a neuron's output column; this is what makes the physically compacted model
(:func:`lightning_tickets.export.compact`) equal to the masked one.

Ties are broken deterministically: among equal scores the unit (or weight) with the lower index is pruned first
(globally: earlier block first), matching :mod:`lightning_tickets.masks`.

Example:
    >>> import torch
    >>> w = torch.tensor([[0.1, -0.9, 0.3, 0.2, 5.0, 4.0, -6.0, 0.0]])
    >>> nm_mask(w, 2, 4).int().tolist()
    [[0, 1, 1, 0, 1, 0, 1, 0]]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from lightning_tickets.masks import num_to_prune, select_lowest

__all__ = [
    "AttentionBlock",
    "attention_ffn_layer",
    "check_nm",
    "check_structured_sparsity",
    "described_modules",
    "FeedForward",
    "Structure",
    "find_structure",
    "head_scores",
    "is_structured",
    "neuron_scores",
    "nm_mask",
    "nm_round_masks",
    "nm_schedule",
    "parse_granularity",
    "parse_nm",
    "select_units",
    "structured_masks",
    "unit_alive",
]

Masks = dict[str, torch.Tensor]
STRUCTURED = ("heads", "neurons", "heads+neurons")
_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


# ---------------------------------------------------------------------------------------------- description
@dataclass(frozen=True)
class AttentionBlock:
    """One multi-head attention block: its four ``nn.Linear`` modules (qualified names) and head layout.

    Attributes:
        name: qualified name of the block (e.g. ``"encoder.layer.0.attention"``); the key of the unit.
        query, key, value: ``nn.Linear`` modules whose output rows are grouped by head (``[heads * head_size, in]``).
        output: the attention-output ``nn.Linear`` (writes to the residual stream; its *input* columns are grouped
            by head).
        core: the module holding the head-count attributes (``num_attention_heads``, ...).
        num_heads: number of heads; ``head_size``: size of one head.
        attrs: ``(attribute of core, "heads" | "all")`` pairs to update when heads are removed physically:
            ``"heads"`` = number of heads, ``"all"`` = heads x head_size.
    """

    name: str
    query: str
    key: str
    value: str
    output: str
    core: str
    num_heads: int
    head_size: int
    attrs: tuple[tuple[str, str], ...] = (("num_attention_heads", "heads"), ("all_head_size", "all"))

    @property
    def linears(self) -> tuple[str, str, str, str]:
        return (self.query, self.key, self.value, self.output)


@dataclass(frozen=True)
class FeedForward:
    """One position-wise feed-forward block: ``output(act(input(x)))`` with ``size`` intermediate neurons.

    Attributes:
        name: qualified name of the unit (e.g. ``"encoder.layer.0"``).
        input: the up-projection ``nn.Linear`` (``[size, hidden]``).
        output: the down-projection ``nn.Linear`` (``[hidden, size]``; writes to the residual stream).
        size: number of intermediate neurons.
    """

    name: str
    input: str
    output: str
    size: int

    @property
    def linears(self) -> tuple[str, str]:
        return (self.input, self.output)


@dataclass(frozen=True)
class Structure:
    """The attention blocks and FFNs of a model (what ``backbone.structure()`` returns).

    Example:
        >>> s = Structure((AttentionBlock("a", "a.q", "a.k", "a.v", "a.o", "a", 2, 4),), ())
        >>> s.prefixed("backbone.").attention[0].query, s.num_heads
        ('backbone.a.q', 2)
    """

    attention: tuple[AttentionBlock, ...] = ()
    ffn: tuple[FeedForward, ...] = ()

    @property
    def num_heads(self) -> int:
        return sum(b.num_heads for b in self.attention)

    @property
    def num_neurons(self) -> int:
        return sum(f.size for f in self.ffn)

    def prefixed(self, prefix: str) -> Structure:
        """The same structure with every module name prefixed (``"backbone."``)."""
        if not prefix:
            return self
        att = tuple(
            replace(
                b,
                name=prefix + b.name,
                query=prefix + b.query,
                key=prefix + b.key,
                value=prefix + b.value,
                output=prefix + b.output,
                core=prefix + b.core,
            )
            for b in self.attention
        )
        ffn = tuple(
            replace(f, name=prefix + f.name, input=prefix + f.input, output=prefix + f.output) for f in self.ffn
        )
        return Structure(att, ffn)

    def restricted(self, weight_names: Iterable[str]) -> Structure:
        """Only the units whose every ``nn.Linear`` weight is in ``weight_names`` (e.g. the pruning scope)."""
        names = set(weight_names)
        att = tuple(b for b in self.attention if all(f"{n}.weight" in names for n in b.linears))
        ffn = tuple(f for f in self.ffn if all(f"{n}.weight" in names for n in f.linears))
        return Structure(att, ffn)

    def residual_writers(self) -> list[str]:
        """``nn.Linear`` modules that write to the residual stream (never pruned along their output)."""
        return [b.output for b in self.attention] + [f.output for f in self.ffn]

    def __add__(self, other: Structure) -> Structure:
        return Structure(self.attention + other.attention, self.ffn + other.ffn)


def attention_ffn_layer(
    root: nn.Module,
    prefix: str,
    core: str,
    output: str,
    ffn: tuple[str, str] | None = None,
    attrs: tuple[tuple[str, str], ...] = (("num_attention_heads", "heads"), ("all_head_size", "all")),
) -> Structure:
    """Describe one transformer layer of ``root``: the attention block whose ``core`` module (``{prefix}.{core}``)
    holds ``query``/``key``/``value`` Linears and the ``num_attention_heads`` / ``attention_head_size`` attributes,
    its attention-output Linear ``{prefix}.{output}``, and optionally an FFN ``(input Linear, output Linear)``.

    Example:
        >>> from transformers import BertConfig
        >>> from transformers.models.bert.modeling_bert import BertLayer
        >>> layer = BertLayer(BertConfig(hidden_size=8, num_attention_heads=2, intermediate_size=16))
        >>> s = attention_ffn_layer(layer, "", "attention.self", "attention.output.dense", ("intermediate.dense",
        ...                         "output.dense"))
        >>> s.attention[0].name, s.attention[0].num_heads, s.attention[0].head_size, s.ffn[0].size
        ('attention', 2, 4, 16)
    """
    pre = f"{prefix}." if prefix else ""
    mod = root.get_submodule(pre + core)
    block = AttentionBlock(
        name=pre + core.rsplit(".", 1)[0] if "." in core else pre + core,
        query=f"{pre}{core}.query",
        key=f"{pre}{core}.key",
        value=f"{pre}{core}.value",
        output=pre + output,
        core=pre + core,
        num_heads=int(mod.num_attention_heads),
        head_size=int(mod.attention_head_size),
        attrs=attrs,
    )
    units: tuple[FeedForward, ...] = ()
    if ffn is not None:
        up, down = pre + ffn[0], pre + ffn[1]
        name = up.rsplit(".", 1)[0] if "." in ffn[0] else up
        units = (FeedForward(name, up, down, int(root.get_submodule(up).out_features)),)
    return Structure((block,), units)


def described_modules(model: nn.Module) -> list[tuple[str, nn.Module, Structure]]:
    """``(qualified name, module, its structure)`` for every outermost module of ``model`` (``model`` included) whose
    ``structure()`` method returns a :class:`Structure` (names in the structure are relative to that module)."""
    found: list[tuple[str, nn.Module, Structure]] = []
    for name, module in model.named_modules():
        if any(name == n or name.startswith(f"{n}.") for n, _, _ in found if n) or (found and found[0][0] == ""):
            continue
        fn = getattr(module, "structure", None)
        if callable(fn):
            s = fn()
            if isinstance(s, Structure):
                found.append((name, module, s))
    return found


def find_structure(model: nn.Module) -> Structure:
    """The structure of every module of ``model`` that describes itself (see :func:`described_modules`), with names
    prefixed by the module's qualified name, so they are names in ``model``.

    Raises:
        ValueError: if no module describes its structure (the message says what to implement).

    Example:
        >>> from lightning_tickets.backbones import Vilt
        >>> wrapper = nn.ModuleDict({"backbone": Vilt("tiny")})
        >>> find_structure(wrapper).attention[1].output
        'backbone.vilt.encoder.layer.1.attention.output.dense'
    """
    found = Structure()
    for name, _, s in described_modules(model):
        found = found + s.prefixed(f"{name}." if name else "")
    if not found.attention and not found.ffn:
        raise ValueError(
            f"{type(model).__name__} has no module with a structure() method describing its attention heads and FFN "
            "neurons; structured pruning supports the Uniter, Lxmert and Vilt backbones, or any module whose "
            "structure() returns a lightning_tickets.structured.Structure"
        )
    return found


# ---------------------------------------------------------------------------------------------- granularity
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


# ---------------------------------------------------------------------------------------------- N:M
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
