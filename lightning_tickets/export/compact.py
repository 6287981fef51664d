"""``compact(model, ticket)``: remove pruned attention heads and FFN neurons physically, with torch-pruning.

What is removed:

* by default, exactly the heads and neurons that the ticket has switched off: a head whose attention-output columns
  are all pruned, a neuron whose output column is pruned. Their contribution is exactly zero in the masked model, so
  the compact model computes the same function (up to float rounding; see docs/faster-tickets.md).
* with ``heads=`` / ``neurons=`` (fractions), at least that fraction of all heads / neurons, lowest score first,
  global, at least one per block. The score is the unit's *density* under the ticket (fraction of its weights
  kept) — for an unstructured ticket — or, without a ticket, its L1 magnitude. Removing units that are still partly
  alive changes the function (fine-tune afterwards).

How: a ``torch_pruning.DependencyGraph`` is traced on every backbone (``example_batch``); for every block, the group
rooted at the query rows of the removed heads (or the intermediate rows of the removed neurons) is built and checked
to contain exactly the block's query/key/value output rows and attention-output input columns (or the FFN's two
Linears). Every Linear that writes to the residual stream is *ignored* as a pruning root, and a group that would
prune any output channel of it (the hidden size) is refused. The group is then pruned by torch-pruning. If the graph
does not give exactly that group for some block (an unfamiliar module), that block is sliced directly instead
(:func:`~lightning_tickets.export.plan.slice_linear`), and ``plan.metadata["sliced"]`` lists it. Finally the
attention modules' head counts are updated (``num_attention_heads`` and ``all_head_size``; LXMERT's ``head_size``);
the head size, hence the attention scaling, is unchanged.

Example:
    >>> import torch
    >>> from lightning_tickets.backbones import Uniter
    >>> from lightning_tickets.structured import structured_masks
    >>> from lightning_tickets.ticket import Ticket
    >>> torch.manual_seed(0) and None
    >>> model = Uniter("tiny", img_dim=8).eval()
    >>> weights = {n: p for n, p in model.named_parameters() if n.startswith("encoder.") and n.endswith(".weight")
    ...            and "LayerNorm" not in n}
    >>> ticket = Ticket(structured_masks(weights, model.structure(), None, 0.5, "heads+neurons"))
    >>> small, plan = compact(model, ticket)
    >>> plan.summary(), sum(layer.intermediate.dense.out_features for layer in small.encoder.layer)
    ({'heads': [4, 8], 'neurons': [64, 128]}, 64)
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

from lightning_tickets.export.plan import HeadPlan, NeuronPlan, PrunePlan, set_head_attrs, slice_linear
from lightning_tickets.masks import num_to_prune
from lightning_tickets.structured import (
    AttentionBlock,
    FeedForward,
    Structure,
    described_modules,
    head_scores,
    neuron_scores,
    select_units,
    unit_alive,
)
from lightning_tickets.ticket import Ticket

log = logging.getLogger(__name__)

__all__ = ["Compacted", "compact", "example_batch"]


class Compacted(NamedTuple):
    """What :func:`compact` returns: the smaller model and its prune plan."""

    model: nn.Module
    plan: PrunePlan


# ---------------------------------------------------------------------------------------------- tracing inputs
def example_batch(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """A one-example batch for tracing a :class:`~lightning_tickets.backbones.Uniter`, ``Lxmert`` or ``Vilt``.

    Raises:
        TypeError: for other modules (pass ``example_inputs=`` to :func:`compact`).
    """
    from lightning_tickets.backbones import Lxmert, Uniter, Vilt

    device = next(backbone.parameters()).device
    dtype = next(backbone.parameters()).dtype
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([[1, 2, 3, 4]], device=device) % int(backbone.config.vocab_size)
    if isinstance(backbone, (Uniter, Lxmert)):
        return {
            "input_ids": ids,
            "img_feat": torch.randn(1, 2, backbone.img_dim, generator=g).to(device, dtype),
            "img_pos_feat": torch.rand(1, 2, 7, generator=g).to(device, dtype),
        }
    if isinstance(backbone, Vilt):
        size = int(backbone.config.image_size)
        return {"input_ids": ids, "pixel_values": torch.randn(1, 3, size, size, generator=g).to(device, dtype)}
    raise TypeError(
        f"no example batch for {type(backbone).__name__}; pass compact(..., example_inputs={{module name: inputs}}) "
        "and forward_fn"
    )


def _default_forward(module: nn.Module, inputs: Any) -> Any:
    out = module(inputs)
    seq = getattr(out, "sequence", None)
    return seq if isinstance(seq, torch.Tensor) else out


# ---------------------------------------------------------------------------------------------- selection
def _masks_of(model: nn.Module, ticket: Any, remap: Mapping[str, str] | None, prefix: str) -> dict[str, torch.Tensor]:
    if ticket is None:
        return {}
    if isinstance(ticket, (str, os.PathLike)):
        ticket = Ticket.load(ticket)
    elif isinstance(ticket, Mapping):
        ticket = Ticket(ticket)
    if not isinstance(ticket, Ticket):
        raise TypeError(f"ticket must be a Ticket, a path or a dict of bool masks, got {type(ticket).__name__}")
    return ticket.apply(model, strict=True, prefix=prefix, remap=remap)  # zeroes the pruned weights


def _density(
    masks: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor], unit: AttentionBlock | FeedForward
) -> torch.Tensor:
    """Fraction of each head's / neuron's weights kept by the ticket (weights it does not cover count as kept)."""

    def mask(lin: str) -> torch.Tensor:
        m = masks.get(f"{lin}.weight")
        return torch.ones_like(params[f"{lin}.weight"], dtype=torch.bool) if m is None else m

    if isinstance(unit, AttentionBlock):
        h, d = unit.num_heads, unit.head_size
        parts = [mask(lin).reshape(h, -1).sum(1, dtype=torch.float64) for lin in (unit.query, unit.key, unit.value)]
        out = mask(unit.output)
        parts.append(out.reshape(out.shape[0], h, d).sum((0, 2), dtype=torch.float64))
        size = 3 * d * params[f"{unit.query}.weight"].shape[1] + out.shape[0] * d
        return (sum(parts) / size).cpu()
    up, down = mask(unit.input), mask(unit.output)
    kept = up.sum(1, dtype=torch.float64) + down.sum(0, dtype=torch.float64)
    return (kept / (up.shape[1] + down.shape[0])).cpu()


def _keep(
    model: nn.Module,
    units: tuple[AttentionBlock, ...] | tuple[FeedForward, ...],
    masks: Mapping[str, torch.Tensor],
    fraction: float | None,
    what: str,
) -> list[torch.Tensor]:
    alive = [unit_alive(masks, u) for u in units]
    keep = alive
    if fraction is not None and units:
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"{what}={fraction} is outside [0, 1): every block keeps at least one {what[:-1]}")
        params = dict(model.named_parameters())
        if masks:
            scores = [_density(masks, params, u) for u in units]
        else:
            scores = [
                head_scores(params, u) if isinstance(u, AttentionBlock) else neuron_scores(params, u) for u in units
            ]
        total = sum(int(a.numel()) for a in alive)
        dead = total - sum(int(a.sum()) for a in alive)
        try:
            keep = select_units(scores, alive, max(dead, num_to_prune(total, fraction)), what=what)
        except ValueError as err:
            raise ValueError(f"{what}={fraction}: {err}; use a smaller fraction") from None
    out = []
    for u, k in zip(units, keep):
        if not bool(k.any()):  # a block the ticket switched off entirely: keep one unit (it contributes zero)
            k = k.clone()
            k[0] = True
            log.info("%s: every %s is pruned; one is kept (it contributes nothing)", u.name, what[:-1])
        out.append(k)
    return out


# ---------------------------------------------------------------------------------------------- pruning
def _expected(model: nn.Module, unit: AttentionBlock | FeedForward) -> dict[nn.Module, str]:
    if isinstance(unit, AttentionBlock):
        spec = {unit.query: "out", unit.key: "out", unit.value: "out", unit.output: "in"}
    else:
        spec = {unit.input: "out", unit.output: "in"}
    return {model.get_submodule(n): kind for n, kind in spec.items()}


def _tp_prune(dg: Any, model: nn.Module, unit: AttentionBlock | FeedForward, idxs: list[int], writers: set) -> bool:
    """Prune ``idxs`` of ``unit`` through torch-pruning's dependency graph; False if the group is not exactly the
    expected one (then nothing was pruned)."""
    import torch_pruning as tp

    root = model.get_submodule(unit.query if isinstance(unit, AttentionBlock) else unit.input)
    if root not in dg.module2node:
        return False
    group = dg.get_pruning_group(root, tp.prune_linear_out_channels, idxs=idxs)
    expected = _expected(model, unit)
    seen: dict[nn.Module, str] = {}
    for dep, dep_idxs in group:
        mod = dep.target.module
        if not isinstance(mod, nn.Module) or not any(True for _ in mod.parameters(recurse=False)):
            if isinstance(mod, nn.Parameter):
                return False  # an unwrapped parameter (embedding-like) would be pruned
            continue
        kind = "out" if dg.is_out_channel_pruning_fn(dep.handler) else "in"
        if kind == "out" and mod in writers:
            return False  # would prune the hidden size
        if expected.get(mod) != kind or sorted(int(i) for i in dep_idxs) != sorted(idxs):
            return False
        seen[mod] = kind
    if seen != expected:
        return False
    group.prune(record_history=False)
    return True


def _slice(model: nn.Module, unit: AttentionBlock | FeedForward, keep_idx: list[int]) -> None:
    if isinstance(unit, AttentionBlock):
        for lin in (unit.query, unit.key, unit.value):
            slice_linear(model.get_submodule(lin), 0, keep_idx)
        slice_linear(model.get_submodule(unit.output), 1, keep_idx)
    else:
        slice_linear(model.get_submodule(unit.input), 0, keep_idx)
        slice_linear(model.get_submodule(unit.output), 1, keep_idx)


def _build_graph(module: nn.Module, inputs: Any, forward_fn: Callable[[nn.Module, Any], Any]) -> Any:
    import torch_pruning as tp

    was_training = module.training
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(True)
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(
                module, example_inputs=inputs, forward_fn=forward_fn, verbose=False
            )
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        module.train(was_training)


@torch.no_grad()
def compact(
    model: nn.Module,
    ticket: Ticket | str | os.PathLike[str] | Mapping[str, torch.Tensor] | None = None,
    *,
    heads: float | None = None,
    neurons: float | None = None,
    remap: Mapping[str, str] | None = None,
    prefix: str = "",
    example_inputs: Mapping[str, Any] | None = None,
    forward_fn: Callable[[nn.Module, Any], Any] | None = None,
    use_torch_pruning: bool = True,
    inplace: bool = False,
) -> Compacted:
    """A physically smaller copy of ``model``: pruned heads and FFN neurons removed (hidden size kept).

    Args:
        model: a backbone (``Uniter``, ``Lxmert``, ``Vilt``) or any module containing backbones (a task module).
        ticket: a :class:`~lightning_tickets.ticket.Ticket`, its path, or ``{parameter name: bool mask}``; its
            masks are applied first (see :meth:`Ticket.apply` for ``remap`` / ``prefix``). ``None``: no masks.
        heads: remove at least this fraction of all heads (lowest density / magnitude first, >= 1 per block).
            ``None``: remove exactly the heads the ticket switched off.
        neurons: the same for FFN neurons.
        example_inputs: ``{qualified name of a backbone in model ("" for model itself): inputs}`` for tracing
            backbones other than UNITER / LXMERT / ViLT (default: :func:`example_batch`).
        forward_fn: ``forward_fn(backbone, inputs) -> tensor`` for tracing (default: ``backbone(inputs).sequence``).
        use_torch_pruning: ``False`` slices every block directly (the same result, no tracing).
        inplace: modify ``model`` itself instead of a deep copy.

    Returns:
        ``Compacted(model, plan)``; save the plan with ``plan.save(path)`` and the weights with
        ``model.state_dict()``, reload with :func:`~lightning_tickets.export.rebuild`.
    """
    if not inplace:
        model = copy.deepcopy(model)
    masks = _masks_of(model, ticket, remap, prefix)
    described = described_modules(model)
    if not described:
        raise ValueError(
            f"{type(model).__name__} has no module with a structure() method (Uniter, Lxmert, Vilt backbones); "
            "compact needs to know the attention heads and FFN neurons"
        )
    plan = PrunePlan(metadata={"model_class": f"{type(model).__module__}.{type(model).__qualname__}", "sliced": []})
    if isinstance(ticket, Ticket):
        meta = ticket.metadata
        plan.metadata["ticket"] = {k: meta[k] for k in ("round", "score", "granularity") if k in meta}
    elif isinstance(ticket, (str, os.PathLike)):
        plan.metadata["ticket"] = {"path": os.fspath(ticket)}
    try:
        from importlib.metadata import version

        import torch_pruning as tp

        plan.metadata["torch_pruning"] = getattr(tp, "__version__", None) or version("torch-pruning")  # < 1.6.1: none
    except ImportError:  # pragma: no cover - a declared dependency
        use_torch_pruning = False
    for name, module, local in described:
        pre = f"{name}." if name else ""
        structure = local.prefixed(pre)
        head_keep = _keep(model, structure.attention, masks, heads, "heads")
        neuron_keep = _keep(model, structure.ffn, masks, neurons, "neurons")
        dg = None
        if use_torch_pruning:
            inputs = (example_inputs or {}).get(name) if example_inputs else None
            inputs = example_batch(module) if inputs is None else inputs
            dg = _build_graph(module, inputs, forward_fn or _default_forward)
        writers = {model.get_submodule(n) for n in structure.residual_writers()}
        _prune(model, structure, head_keep, neuron_keep, dg, writers, plan)
    return Compacted(model, plan)


def _prune(
    model: nn.Module,
    structure: Structure,
    head_keep: list[torch.Tensor],
    neuron_keep: list[torch.Tensor],
    dg: Any,
    writers: set,
    plan: PrunePlan,
) -> None:
    for block, keep in zip(structure.attention, head_keep):
        kept = [int(i) for i in torch.nonzero(keep).squeeze(1)]
        entry = HeadPlan(
            block.query,
            block.key,
            block.value,
            block.output,
            block.core,
            block.num_heads,
            block.head_size,
            kept,
            [list(a) for a in block.attrs],
        )
        removed = [c for c in range(block.num_heads * block.head_size) if c // block.head_size not in set(kept)]
        if removed:
            if dg is None or not _tp_prune(dg, model, block, removed, writers):
                if dg is not None:
                    warnings.warn(f"compact: unexpected torch-pruning group for {block.name}; sliced", stacklevel=3)
                    plan.metadata["sliced"].append(block.name)
                _slice(model, block, entry.channels())
            set_head_attrs(model.get_submodule(block.core), block.attrs, len(kept), block.head_size)
        plan.attention[block.name] = entry
    for ffn, keep in zip(structure.ffn, neuron_keep):
        kept = [int(i) for i in torch.nonzero(keep).squeeze(1)]
        removed = [int(i) for i in torch.nonzero(~keep).squeeze(1)]
        if removed and (dg is None or not _tp_prune(dg, model, ffn, removed, writers)):
            if dg is not None:
                warnings.warn(f"compact: unexpected torch-pruning group for {ffn.name}; sliced", stacklevel=3)
                plan.metadata["sliced"].append(ffn.name)
            _slice(model, ffn, kept)
        plan.ffn[ffn.name] = NeuronPlan(ffn.input, ffn.output, ffn.size, kept)
