"""Ticket transfer: which ticket tensors land on which parameters of another model, and what is left dense.

A ticket found on task A is trained on task B in fixed-ticket mode (``LotteryTicketCallback(ticket=...,
ticket_remap=...)``). The names are mapped exactly as :meth:`Ticket.apply` maps them: the **longest** ``remap`` key
that prefixes a ticket name is replaced by its value (``""`` strips it; a key ``""`` matches every name), then
``prefix`` is prepended. :func:`match_ticket` computes that mapping without touching the model and says:

* ``matched``: ticket name -> model parameter name (same shape);
* ``missing``: ticket tensors with no parameter of that name in the model;
* ``shape_mismatch``: ticket tensors whose parameter has another shape;
* ``uncovered``: parameters of the model's pruning ``scope`` that no ticket tensor reaches (they train dense);
* ``unused_remap``: ``remap`` keys that prefix no ticket name (usually a typo).

The callback logs this report at fit start in fixed-ticket mode, keeps it as ``cb.ticket_report`` and writes it to
the row of ``summary.json`` (key ``"match"``).

Example:
    >>> import torch
    >>> from lightning_tickets.ticket import Ticket
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    >>> t = Ticket({"model.0.weight": torch.ones(2, 2, dtype=torch.bool)})
    >>> r = match_ticket(t, net, remap={"model.": ""}, scope={"include": [r"^\\d+$"]})
    >>> r.matched, r.uncovered
    ({'model.0.weight': '0.weight'}, ['1.weight'])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from lightning_tickets.scope import ScopeSpec, resolve_scope
from lightning_tickets.ticket import Ticket

__all__ = ["TicketMatch", "map_name", "match_ticket"]

_SHOW = 10


def map_name(name: str, remap: Mapping[str, str] | None = None, prefix: str = "") -> str:
    """The model parameter name a ticket tensor ``name`` maps to (same rule as :meth:`Ticket.apply`).

    Example:
        >>> map_name("model.encoder.layer.0.weight", {"model.": "backbone.", "model.encoder.": "enc."})
        'enc.layer.0.weight'
        >>> map_name("encoder.w", {"": "backbone."})
        'backbone.encoder.w'
    """
    for key in sorted(remap or {}, key=len, reverse=True):
        if name.startswith(key):
            name = remap[key] + name[len(key) :]  # type: ignore[index]
            break
    return prefix + name


@dataclass
class TicketMatch:
    """How a ticket's tensors map onto a model (see the module docstring for each field)."""

    matched: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)
    uncovered: list[str] | None = None
    unused_remap: list[str] = field(default_factory=list)
    by_rule: dict[str, int] = field(default_factory=dict)
    remap: dict[str, str] = field(default_factory=dict)
    prefix: str = ""

    @property
    def renamed(self) -> int:
        """How many matched tensors have a parameter name different from their ticket name."""
        return sum(a != b for a, b in self.matched.items())

    @property
    def complete(self) -> bool:
        """Every ticket tensor matched a parameter of the same shape."""
        return not self.missing and not self.shape_mismatch

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (written to ``summary.json``)."""
        out = asdict(self)
        out["renamed"] = self.renamed
        return out

    def format(self, limit: int = _SHOW) -> str:
        """A short multi-line report (what :class:`LotteryTicketCallback` logs).

        Example:
            >>> import torch
            >>> t = Ticket({"a.weight": torch.ones(1, 1, dtype=torch.bool)})
            >>> print(match_ticket(t, nn.ModuleDict({"b": nn.Linear(1, 1)}), {"a.": "b."}, scope="all").format())
            ticket -> model: 1/1 ticket tensors matched, 0 missing, 0 wrong shape
              matched 'a.' -> 'b.': 1 (e.g. 'a.weight' -> 'b.weight')
              scope tensors not covered by the ticket (trained dense): none
        """
        n = len(self.matched) + len(self.missing) + len(self.shape_mismatch)
        lines = [
            f"ticket -> model: {len(self.matched)}/{n} ticket tensors matched, {len(self.missing)} missing, "
            f"{len(self.shape_mismatch)} wrong shape"
        ]
        first: dict[str, tuple[str, str]] = {}
        for (a, b), rule in zip(self.matched.items(), self._rules()):
            first.setdefault(rule, (a, b))
        for rule, count in self.by_rule.items():
            a, b = first[rule]
            lines.append(f"  matched {rule}: {count} (e.g. {a!r} -> {b!r})")
        if self.missing:
            lines.append(f"  missing in the model (not applied): {_names(self.missing, limit)}")
        if self.shape_mismatch:
            lines.append(f"  shape mismatches: {'; '.join(self.shape_mismatch[:limit])}")
        if self.unused_remap:
            lines.append(f"  remap keys matching no ticket tensor: {_names(self.unused_remap, limit)}")
        if self.uncovered is not None:
            lines.append(
                "  scope tensors not covered by the ticket (trained dense): "
                + (f"{len(self.uncovered)}: {_names(self.uncovered, limit)}" if self.uncovered else "none")
            )
        return "\n".join(lines)

    def _rules(self) -> list[str]:
        """The rule label of every matched tensor, in order (see :func:`_rule`)."""
        return [_rule(a, self.remap, self.prefix) for a in self.matched]

    def __str__(self) -> str:
        return self.format()


def _rule(name: str, remap: Mapping[str, str], prefix: str) -> str:
    """How ``name`` is renamed: ``"'old.' -> 'new.'"`` (remap key used, plus ``prefix``) or ``"by name"``."""
    key = next((k for k in sorted(remap, key=len, reverse=True) if name.startswith(k)), None)
    if key is None:
        return f"with prefix {prefix!r}" if prefix else "by name"
    return f"{key!r} -> {prefix + remap[key]!r}"


def _names(names: list[str], limit: int) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def match_ticket(
    ticket: Ticket,
    model: nn.Module,
    remap: Mapping[str, str] | None = None,
    prefix: str = "",
    scope: ScopeSpec | None = None,
) -> TicketMatch:
    """Map ``ticket``'s tensors onto ``model``'s parameters (nothing is modified); see the module docstring.

    Args:
        ticket: the ticket to transfer.
        model: the target module.
        remap: ``{ticket-name prefix: model-name prefix}``, as for :meth:`Ticket.apply`.
        prefix: prepended to every (remapped) name, as for :meth:`Ticket.apply`.
        scope: the target's pruning scope (preset or dict); its parameters not reached by the ticket are listed in
            ``uncovered``. ``None``: not computed. A scope matching nothing in ``model`` gives ``uncovered=[]``.
    """
    remap = dict(remap or {})
    params = dict(model.named_parameters(remove_duplicate=False))
    report = TicketMatch(remap=remap, prefix=prefix)
    used: set[str] = set()
    keys = sorted(remap, key=len, reverse=True)
    for name, mask in ticket.masks.items():
        key = next((k for k in keys if name.startswith(k)), None)
        if key is not None:
            used.add(key)
        target = map_name(name, remap, prefix)
        param = params.get(target)
        if param is None:
            report.missing.append(name)
        elif tuple(param.shape) != tuple(mask.shape):
            report.shape_mismatch.append(
                f"{name!r} -> {target!r}: ticket {list(mask.shape)}, parameter {list(param.shape)}"
            )
        else:
            report.matched[name] = target
    report.unused_remap = [k for k in remap if k not in used]
    for rule in report._rules():
        report.by_rule[rule] = report.by_rule.get(rule, 0) + 1
    if scope is not None:
        try:
            in_scope = [n for n, _ in resolve_scope(model, scope)]
        except ValueError:
            in_scope = []
        covered = set(report.matched.values())
        report.uncovered = [n for n in in_scope if n not in covered]
    return report
