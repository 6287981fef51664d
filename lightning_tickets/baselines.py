"""Baselines and controls for tickets: random masks, shuffled / re-initialised / other weights, one-shot pruning.

Every baseline is either a *mask* (a :class:`~lightning_tickets.ticket.Ticket`) or a *weight transform* applied to
the model before training; ``LotteryTicketCallback(ticket=..., ticket_mask=..., ticket_weights=...)`` trains them with
the mask fixed, so there is no second training loop.

================================  =========================================================================
paper / LTH control               here
================================  =========================================================================
random pruning (RP)               :func:`random_ticket` (``matched=False``: global; ``True``: per-tensor
                                  sparsities of a given ticket, "layerwise_matched")
θ′: ticket mask on other weights  :func:`load_weights` (e.g. plain BERT / MiniLM instead of VL-pretrained)
θ″: weights shuffled per tensor   :func:`shuffle_weights`
random re-initialisation          :func:`reinit_weights`
one-shot magnitude pruning of θ0  :func:`one_shot_ticket`
================================  =========================================================================

Example:
    >>> import torch
    >>> from lightning_tickets.ticket import Ticket
    >>> t = Ticket({"a": torch.tensor([True, False, False, True]), "b": torch.tensor([True, True])})
    >>> r = random_ticket(t, matched=True, seed=0)
    >>> r.tensor_sparsity() == t.tensor_sparsity()
    True
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lightning_tickets.fileio import CheckpointError, UnsafeCheckpointError, load_state_dict_file
from lightning_tickets.masks import global_magnitude_masks, layerwise_magnitude_masks, random_masks
from lightning_tickets.scope import ScopeSpec, resolve_scope
from lightning_tickets.ticket import Ticket, TicketError

__all__ = ["load_weights", "one_shot_ticket", "random_ticket", "reinit_weights", "shuffle_weights"]


def random_ticket(ticket: Ticket, matched: bool = True, seed: int = 0) -> Ticket:
    """A random mask with the same total sparsity (``matched=False``) or the same per-tensor sparsities
    (``matched=True``, "layerwise_matched") as ``ticket``; exactly the same pruned counts."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    if matched:
        for name, m in ticket.masks.items():
            n_pruned = m.numel() - int(m.count_nonzero())
            out[name] = _random_mask(m.shape, n_pruned, g)
    else:
        shapes = {n: torch.empty(m.shape) for n, m in ticket.masks.items()}
        masks = random_masks(shapes, None, ticket.num_pruned / max(1, ticket.num_weights), "global", g)
        # round(s*N) may differ from num_pruned by float error: correct it exactly
        out = _fix_count(masks, ticket.num_pruned, g)
    meta = {
        "baseline": "random_layerwise_matched" if matched else "random_global",
        "seed": seed,
        "source_ticket_sparsity": ticket.sparsity,
    }
    return Ticket(out, meta)


def _random_mask(shape: torch.Size, n_pruned: int, g: torch.Generator) -> torch.Tensor:
    n = 1
    for s in shape:
        n *= s
    keep = torch.ones(n, dtype=torch.bool)
    keep[torch.randperm(n, generator=g)[:n_pruned]] = False
    return keep.reshape(shape)


def _fix_count(masks: dict[str, torch.Tensor], n_pruned: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    have = sum(m.numel() - int(m.count_nonzero()) for m in masks.values())
    if have == n_pruned:
        return masks
    flat = torch.cat([m.reshape(-1) for m in masks.values()])
    idx = (flat if have > n_pruned else ~flat).nonzero().squeeze(1)
    pick = idx[torch.randperm(idx.numel(), generator=g)[: abs(have - n_pruned)]]
    flat[pick] = have > n_pruned
    out, start = {}, 0
    for name, m in masks.items():
        out[name] = flat[start : start + m.numel()].reshape(m.shape).clone()
        start += m.numel()
    return out


def _params(model: nn.Module, names: list[str]) -> dict[str, nn.Parameter]:
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise TicketError(f"parameters not found in {type(model).__name__}: {missing[:10]}")
    return {n: params[n] for n in names}


@torch.no_grad()
def shuffle_weights(model: nn.Module, names: list[str] | Ticket, seed: int = 0) -> None:
    """θ″: permute the values of each named tensor randomly *within* that tensor (in place).

    Each tensor keeps its multiset of values (its magnitude distribution) but loses its structure.
    """
    names = list(names.masks) if isinstance(names, Ticket) else list(names)
    g = torch.Generator().manual_seed(seed)
    for p in _params(model, names).values():
        flat = p.detach().reshape(-1)
        perm = torch.randperm(flat.numel(), generator=g).to(flat.device)
        p.copy_(flat[perm].reshape(p.shape))


@torch.no_grad()
def reinit_weights(model: nn.Module, names: list[str] | Ticket, seed: int = 0) -> list[str]:
    """Random re-initialisation (the original LTH control): call ``reset_parameters()`` on every module owning a
    named parameter, under a fixed seed. Returns the names of the modules re-initialised.

    Raises:
        TicketError: if a module owning a named parameter has no ``reset_parameters``.
    """
    names = list(names.masks) if isinstance(names, Ticket) else list(names)
    _params(model, names)
    owners: dict[str, nn.Module] = {}
    for n in names:
        mod_name = n.rsplit(".", 1)[0] if "." in n else ""
        mod = model.get_submodule(mod_name)
        if not hasattr(mod, "reset_parameters"):
            raise TicketError(f"cannot re-initialise {n!r}: {type(mod).__name__} has no reset_parameters()")
        owners[mod_name] = mod
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for mod in owners.values():
            mod.reset_parameters()
    return list(owners)


@torch.no_grad()
def load_weights(
    model: nn.Module,
    source: str | os.PathLike[str] | Mapping[str, torch.Tensor],
    remap: Mapping[str, str] | None = None,
    names: list[str] | None = None,
    strict: bool = False,
    trust_checkpoint: bool = False,
) -> dict[str, Any]:
    """θ′: copy weights from another checkpoint into ``model`` by name (with prefix ``remap``), in place.

    ``source`` is a state dict, a ``.safetensors`` file, a Lightning ``.ckpt`` (its ``state_dict``) or a ``torch.save``
    file. Pickled files are read with ``torch.load(weights_only=True)``, so they cannot run code; a file that needs
    a full unpickle is refused unless ``trust_checkpoint=True`` (only for files you trust: unpickling can run code).
    Only ``names`` are copied when given. Returns a report ``{"matched": [...], "missing": [...],
    "unexpected": [...], "shape_mismatch": [...]}``; ``strict=True`` turns missing names or shape mismatches into a
    :class:`TicketError`.

    Raises:
        lightning_tickets.fileio.UnsafeCheckpointError: the file needs a full unpickle and ``trust_checkpoint`` is
            False (the message names the opt-in).
        TicketError: the file is missing, corrupt or holds no state dict; or (``strict``) names do not match.

    Example:
        >>> import torch
        >>> src, dst = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
        >>> load_weights(dst, src.state_dict())["matched"]
        ['weight', 'bias']
    """
    if not isinstance(source, Mapping):
        try:
            sd: Mapping[str, torch.Tensor] = load_state_dict_file(source, trust_checkpoint, what="weight source")
        except UnsafeCheckpointError:
            raise
        except CheckpointError as e:
            raise TicketError(str(e)) from e
    else:
        sd = source
    remap = dict(remap or {})

    def mapped(key: str) -> str:
        best = max((k for k in remap if key.startswith(k)), key=len, default=None)
        return key if best is None else remap[best] + key[len(best) :]

    src = {mapped(k): v for k, v in sd.items()}
    params = dict(model.named_parameters())
    wanted = list(names) if names is not None else list(params)
    report: dict[str, Any] = {"matched": [], "missing": [], "unexpected": [], "shape_mismatch": []}
    for n in wanted:
        if n not in src:
            report["missing"].append(n)
        elif tuple(src[n].shape) != tuple(params[n].shape):
            report["shape_mismatch"].append(f"{n}: source {tuple(src[n].shape)} vs model {tuple(params[n].shape)}")
        else:
            report["matched"].append(n)
    report["unexpected"] = [k for k in src if k not in params]
    if strict and (report["missing"] or report["shape_mismatch"]):
        raise TicketError(
            f"weight source does not cover the model: missing {report['missing'][:10]}, shape mismatches "
            f"{report['shape_mismatch'][:10]}; use remap={{'old.prefix.': 'new.prefix.'}}"
        )
    for n in report["matched"]:
        params[n].copy_(src[n].to(params[n].dtype))
    return report


@torch.no_grad()
def one_shot_ticket(
    model: nn.Module, sparsity: float, scope: ScopeSpec = "encoder", granularity: str = "global"
) -> Ticket:
    """One-shot magnitude pruning of the model's current weights (θ0, no training before pruning)."""
    params = dict(resolve_scope(model, scope))
    fn = global_magnitude_masks if granularity == "global" else layerwise_magnitude_masks
    if granularity not in ("global", "layerwise"):
        raise ValueError(f"granularity={granularity!r} is unknown; use 'global' or 'layerwise'")
    masks = fn(params, None, sparsity)
    return Ticket(masks, {"baseline": "one_shot", "granularity": granularity, "target_sparsity": sparsity})
