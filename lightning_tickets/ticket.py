"""Tickets: boolean weight masks (``True`` = kept) keyed by parameter name, plus JSON metadata.

A ticket is stored as a `safetensors <https://github.com/huggingface/safetensors>`_ file holding one bit-packed
``uint8`` tensor per mask (1 bit per weight) and a single header metadata key, ``"lightning_tickets"``, whose value
is a JSON document (format version, per-tensor shapes and sparsities, user metadata).

Example:
    >>> import torch
    >>> t = Ticket({"fc.weight": torch.tensor([[True, False], [False, False]])}, {"round": 3})
    >>> t
    Ticket(tensors=1, weights=4, sparsity=0.7500, round=3)
    >>> t.num_pruned, t.tensor_sparsity()
    (3, {'fc.weight': 0.75})
    >>> layer = torch.nn.Linear(2, 2, bias=False)
    >>> _ = t.apply(layer, remap={"fc.": ""})
    >>> int(layer.weight.count_nonzero()) <= 1
    True
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from lightning_tickets.__about__ import __version__
from lightning_tickets.fileio import atomic_write
from lightning_tickets.ticket_format import (
    FORMAT_VERSION,
    METADATA_KEY,
    RESERVED,
    TicketError,
    build_header,
    mask_sparsity,
    plain_name,
    read_ticket_file,
)

__all__ = ["FORMAT_VERSION", "METADATA_KEY", "Ticket", "TicketError"]

_SHOW = 10  # how many names an error message lists


def _names(names: Iterable[str], limit: int = _SHOW) -> str:
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


class Ticket:
    """A set of boolean masks (``True`` = weight kept) keyed by parameter name, plus JSON-serialisable metadata.

    Args:
        masks: parameter name -> bool tensor. Tensors are copied to the CPU; insertion order is preserved.
        metadata: JSON-serialisable run metadata (``round``, ``score``, ``schedule``, ...). The keys
            ``format_version``, ``library_version``, ``tensors`` and ``sparsity`` are reserved.

    Raises:
        TicketError: if ``masks`` is empty, a mask is not a bool tensor, or ``metadata`` uses a reserved key.

    Example:
        >>> import torch
        >>> t = Ticket({"w": torch.tensor([True, False, False, True])})
        >>> t.sparsity, t.num_weights, t.num_pruned
        (0.5, 4, 2)
    """

    def __init__(self, masks: Mapping[str, torch.Tensor], metadata: Mapping[str, Any] | None = None) -> None:
        if not masks:
            raise TicketError("a Ticket needs at least one mask; got an empty mapping")
        self.masks: dict[str, torch.Tensor] = {}
        for name, mask in masks.items():
            if not isinstance(name, str) or not name or name == "__metadata__":
                raise TicketError(f"invalid mask name {name!r}: use the (non-empty) parameter name as a string")
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
                got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
                raise TicketError(f"mask {name!r} must be a bool tensor, got {got}; convert it with `mask != 0`")
            self.masks[name] = mask.detach().to("cpu", copy=True)
        self.metadata: dict[str, Any] = dict(metadata or {})
        reserved = [k for k in RESERVED if k in self.metadata]
        if reserved:
            raise TicketError(f"metadata keys {reserved} are reserved by the ticket format; rename them")
        self.format_version: int = FORMAT_VERSION
        self.library_version: str = __version__

    # ------------------------------------------------------------------ statistics
    @property
    def num_weights(self) -> int:
        """Total number of weights covered by the masks."""
        return sum(m.numel() for m in self.masks.values())

    @property
    def num_pruned(self) -> int:
        """Number of pruned (``False``) entries over all masks."""
        return sum(m.numel() - int(m.count_nonzero()) for m in self.masks.values())

    @property
    def sparsity(self) -> float:
        """Fraction of pruned weights over all masks (0.0 when there are no weights)."""
        total = self.num_weights
        return self.num_pruned / total if total else 0.0

    def tensor_sparsity(self) -> dict[str, float]:
        """Return ``{name: fraction pruned}`` for each mask."""
        return {name: mask_sparsity(m) for name, m in self.masks.items()}

    def profile(self) -> list[dict[str, Any]]:
        """Per-tensor rows ``{name, shape, numel, kept, sparsity}``, e.g. for a per-layer sparsity table.

        Example:
            >>> import torch
            >>> Ticket({"w": torch.tensor([[True, False]])}).profile()
            [{'name': 'w', 'shape': [1, 2], 'numel': 2, 'kept': 1, 'sparsity': 0.5}]
        """
        return [
            {
                "name": name,
                "shape": list(m.shape),
                "numel": m.numel(),
                "kept": int(m.count_nonzero()),
                "sparsity": mask_sparsity(m),
            }
            for name, m in self.masks.items()
        ]

    def __repr__(self) -> str:
        extra = f", round={self.metadata['round']}" if "round" in self.metadata else ""
        return f"Ticket(tensors={len(self.masks)}, weights={self.num_weights}, sparsity={self.sparsity:.4f}{extra})"

    # ------------------------------------------------------------------ construction from a model
    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        names: Iterable[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Ticket:
        """Build a ticket from the current zeros of ``model``: ``mask = param != 0``.

        Args:
            model: the module to read.
            names: parameter names to include; default: every parameter with ``dim() >= 2``.
            metadata: optional metadata for the ticket.

        Raises:
            TicketError: if a requested name is not a parameter of ``model``, or nothing is selected.
        """
        if names is None:
            selected = {n: p for n, p in model.named_parameters() if p.dim() >= 2}
        else:
            params = dict(model.named_parameters(remove_duplicate=False))
            names = list(names)
            missing = [n for n in names if n not in params]
            if missing:
                raise TicketError(
                    f"{type(model).__name__} has no parameter(s) {_names(missing)}; "
                    f"available names include {_names(params, 5)}"
                )
            selected = {n: params[n] for n in names}
        if not selected:
            raise TicketError(f"no parameters selected from {type(model).__name__}; pass `names=` explicitly")
        return cls({plain_name(n): p.detach() != 0 for n, p in selected.items()}, metadata)

    # ------------------------------------------------------------------ I/O
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the ticket to a safetensors file, atomically, creating parent directories.

        The data goes to a temporary file in the same directory, is fsync'ed, then moved over ``path`` with
        :func:`os.replace` (:func:`lightning_tickets.fileio.atomic_write`), so an existing file is only replaced by
        a complete one. Each tensor's entry records a CRC-32 checksum that :meth:`load` verifies.

        Returns:
            The path written.

        Raises:
            TicketError: if the metadata is not JSON-serialisable.
        """
        from safetensors.torch import save as st_save

        path = Path(path)
        header, packed = build_header(self.masks, self.metadata)
        data = st_save(packed, metadata={METADATA_KEY: header})
        with atomic_write(path) as f:
            f.write(data)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Ticket:
        """Read a ticket written by :meth:`save` (this format or an older one) and check every field.

        Raises:
            TicketError: if the file is missing or not a regular file, truncated or corrupt, is not a ticket file,
                was written by a newer format version, fails a per-tensor checksum, or its metadata is invalid or
                disagrees with the tensors (unlisted, duplicate or missing tensors, bad shapes or sparsities).
        """
        masks, info, version = read_ticket_file(path)
        metadata = {k: v for k, v in info.items() if k not in RESERVED}
        ticket = cls(masks, metadata)
        ticket.format_version = version
        ticket.library_version = str(info.get("library_version", "unknown"))
        return ticket

    # ------------------------------------------------------------------ apply
    def apply(
        self,
        model: torch.nn.Module,
        strict: bool = True,
        prefix: str = "",
        remap: Mapping[str, str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Zero the pruned weights of ``model`` in place (see :meth:`masks_for` for the name mapping and checks).

        Returns:
            ``{model parameter name: bool mask on the parameter's device}`` for every matched parameter.

        Raises:
            TicketError: on missing names (strict), shape mismatches, or two ticket names mapping to one parameter.
        """
        out: dict[str, torch.Tensor] = {}
        params = dict(model.named_parameters(remove_duplicate=False))
        with torch.no_grad():
            for target, mask in self.masks_for(model, strict=strict, prefix=prefix, remap=remap).items():
                param = params[target]
                dev_mask = mask.to(param.device)
                param.masked_fill_(~dev_mask, 0)
                out[target] = dev_mask
        return out

    def masks_for(
        self,
        model: torch.nn.Module,
        strict: bool = True,
        prefix: str = "",
        remap: Mapping[str, str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Map the ticket onto ``model``'s parameter names and check names and shapes, modifying nothing.

        Used by :meth:`apply`, and for sharded models (FSDP2), whose full masks are then cut into local shards
        (:func:`lightning_tickets.sharded.scatter_masks`). Shapes are compared with the parameters' (global) shapes.

        Each ticket name is mapped to a parameter name: first ``remap`` replaces the longest matching key prefix by its
        value (``""`` strips it), then ``prefix`` is prepended. Names match across ``torch.compile``: a name that is not
        a parameter of ``model`` is compared without ``_orig_mod.`` parts (:func:`plain_name`) with the parameters'
        names without them, so a ticket of a compiled model applies to the plain one and the other way round. All names
        and shapes are checked before any parameter is modified.

        Args:
            model: the module to prune.
            strict: if True, a ticket name with no matching parameter is an error; if False it is skipped with a
                warning.
            prefix: prepended to every (remapped) ticket name, e.g. ``"model."``.
            remap: ``{ticket-name prefix: model-name prefix}``.

        Returns:
            ``{model parameter name: the ticket's bool mask (CPU)}`` for every matched parameter.

        Raises:
            TicketError: on missing names (strict), shape mismatches, or two ticket names mapping to one parameter.

        Example:
            >>> t = Ticket({"fc.weight": torch.tensor([[True, False]])})
            >>> list(t.masks_for(torch.nn.Linear(2, 1), remap={"fc.": ""}))
            ['weight']
        """
        params = dict(model.named_parameters(remove_duplicate=False))
        plain: dict[str, str] = {}
        for n in params:
            plain.setdefault(plain_name(n), n)
        remap = dict(remap or {})
        keys = sorted(remap, key=len, reverse=True)
        matched: dict[str, tuple[str, torch.Tensor]] = {}  # model name -> (ticket name, mask)
        missing: list[str] = []
        mismatched: list[str] = []
        for name, mask in self.masks.items():
            target = name
            for k in keys:
                if name.startswith(k):
                    target = remap[k] + name[len(k) :]
                    break
            target = prefix + target
            if target not in params:  # a ticket of the compiled model on the plain one, or the other way round
                target = plain.get(plain_name(target), target)
            param = params.get(target)
            if param is None:
                missing.append(name)
            elif tuple(param.shape) != tuple(mask.shape):
                mismatched.append(
                    f"{name!r} -> {target!r}: ticket shape {list(mask.shape)}, parameter shape {list(param.shape)}"
                )
            elif target in matched:
                raise TicketError(
                    f"ticket tensors {matched[target][0]!r} and {name!r} both map to parameter {target!r}; "
                    "check `remap`/`prefix`"
                )
            else:
                matched[target] = (name, mask)
        model_name = type(model).__name__
        if mismatched:
            raise TicketError(
                f"shape mismatch applying ticket to {model_name} for {len(mismatched)} tensor(s): "
                + "; ".join(mismatched[:_SHOW])
                + ". The ticket was found for a different architecture/config."
            )
        if missing and strict:
            raise TicketError(
                f"{len(missing)} of {len(self.masks)} ticket tensor(s) have no matching parameter in {model_name}: "
                f"{_names(missing)}. The model's parameters include {_names(params, 5)}. "
                f"{_suggest(missing[0], params)}Pass `remap={{old_prefix: new_prefix}}` and/or `prefix=` to map "
                "ticket names to parameter names, or strict=False to skip them."
            )
        if missing:
            warnings.warn(
                f"Ticket.apply: skipped {len(missing)} ticket tensor(s) with no matching parameter in {model_name}: "
                f"{_names(missing, 5)}",
                stacklevel=2,
            )
        return {target: mask for target, (_, mask) in matched.items()}

    # ------------------------------------------------------------------ comparison
    def overlap(self, other: Ticket) -> dict[str, Any]:
        """Intersection-over-union of the KEPT weights of two tickets over the same tensors.

        Returns:
            ``{"global": IoU over all tensors, "per_tensor": {name: IoU}}``; an IoU is 1.0 when both keep nothing.

        Raises:
            TicketError: if the tickets cover different tensor names or shapes.

        Example:
            >>> import torch
            >>> a = Ticket({"w": torch.tensor([True, True, False, False])})
            >>> b = Ticket({"w": torch.tensor([True, False, True, False])})
            >>> a.overlap(b)
            {'global': 0.3333333333333333, 'per_tensor': {'w': 0.3333333333333333}}
        """
        only_self = [n for n in self.masks if n not in other.masks]
        only_other = [n for n in other.masks if n not in self.masks]
        shapes = [
            f"{n!r}: {list(m.shape)} vs {list(other.masks[n].shape)}"
            for n, m in self.masks.items()
            if n in other.masks and m.shape != other.masks[n].shape
        ]
        if only_self or only_other or shapes:
            parts = []
            if only_self:
                parts.append(f"only in this ticket: {_names(only_self)}")
            if only_other:
                parts.append(f"only in the other ticket: {_names(only_other)}")
            if shapes:
                parts.append("shape mismatches: " + "; ".join(shapes[:_SHOW]))
            raise TicketError(
                "cannot compare tickets over different tensors (" + "; ".join(parts) + "). Compare tickets of the "
                "same model, or restrict both to the shared names with Ticket({n: t.masks[n] for n in names})."
            )
        per_tensor: dict[str, float] = {}
        inter_total = union_total = 0
        for name, a in self.masks.items():
            b = other.masks[name]
            inter, union = int((a & b).count_nonzero()), int((a | b).count_nonzero())
            per_tensor[name] = inter / union if union else 1.0
            inter_total += inter
            union_total += union
        return {"global": inter_total / union_total if union_total else 1.0, "per_tensor": per_tensor}


def _suggest(ticket_name: str, param_names: Iterable[str]) -> str:
    """Guess a concrete ``remap``/``prefix`` when a parameter name and the ticket name differ only by a prefix."""
    for p in param_names:
        if ticket_name.endswith("." + p):
            return f"Hint: {p!r} looks like the same tensor; try remap={{{ticket_name[: -len(p)]!r}: ''}}. "
        if p.endswith("." + ticket_name):
            return f"Hint: {p!r} looks like the same tensor; try prefix={p[: -len(ticket_name)]!r}. "
    return ""
