"""Checks of the other callbacks in the Trainer: a second ticket callback, a monitored ``ModelCheckpoint``.

Two ticket callbacks may share a Trainer (e.g. a text and a vision tower pruned to different sparsities) when their
scopes are disjoint and their ticket directories differ; each one's checkpoint state has its own key
(:func:`state_key_for`). A ``ModelCheckpoint(monitor=...)`` that keeps its top-k over the whole fit compares
checkpoints of different sparsities, which is rarely what an IMP user wants: :func:`check_trainer` warns, naming the
per-round pattern of docs/callback.md.

Example:
    >>> from lightning_tickets.scope import Scope
    >>> state_key_for(Scope.parse("encoder"))
    'LotteryTicketCallback'
    >>> state_key_for(Scope.parse({"include": ["vision"]}))[:40]
    'LotteryTicketCallback{"exclude": [], "in'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

from lightning_tickets.scope import Scope, scope_names

__all__ = ["LEGACY_STATE_KEY", "all_finished", "check_trainer", "state_key_for"]

#: The checkpoint key every ticket callback used before keys depended on the scope (and still uses by default).
LEGACY_STATE_KEY = "LotteryTicketCallback"
_DEFAULT_SCOPE = "encoder"


def state_key_for(scope: Scope) -> str:
    """The callback's key in ``checkpoint["callbacks"]``: :data:`LEGACY_STATE_KEY` for the default scope (so
    checkpoints of earlier versions resume unchanged), else that key followed by the scope as sorted JSON."""
    spec = scope.to_dict()
    if spec == Scope.parse(_DEFAULT_SCOPE).to_dict():
        return LEGACY_STATE_KEY
    return LEGACY_STATE_KEY + json.dumps(spec, sort_keys=True)


def check_trainer(trainer: Any, pl_module: Any, callback: Any, scope: list[str]) -> None:
    """Refuse a second ticket callback that shares ``callback``'s ticket directory or any of its ``scope``
    parameters; warn about a ``ModelCheckpoint`` whose top-k spans the rounds of an IMP run.

    Raises:
        ValueError: naming the two callbacks, the shared directory or the shared parameters, and the fix.
    """
    mine = set(scope)
    for other in _ticket_callbacks(trainer):
        if other is callback:
            continue
        if callback.rewind_head:
            raise ValueError(
                "two ticket callbacks in this Trainer need rewind_head=False on each: a callback that rewinds "
                "parameters outside its scope would also rewind the other callback's parameters at each of its "
                "rounds. Pass rewind_head=False to both (each then rewinds its own scope only)"
            )
        if Path(other.ticket_dir).resolve() == Path(callback.ticket_dir).resolve():
            raise ValueError(
                f"two ticket callbacks in this Trainer write to the same ticket_dir={str(callback.ticket_dir)!r}; "
                "their tickets and summary.json would overwrite each other. Give each its own ticket_dir"
            )
        if getattr(other, "fixed_ticket_path", None) is None:  # IMP: compare its scope with ours
            shared = [n for n in scope_names(pl_module, other.scope_spec) if n in mine]
            if shared:
                raise ValueError(
                    f"two ticket callbacks in this Trainer prune the same {len(shared)} parameter(s) (e.g. "
                    f"{shared[:3]}): scopes {callback.scope.to_dict()} and {other.scope.to_dict()}. Make the scopes "
                    "disjoint, e.g. with include/exclude regexes on the two towers' module names"
                )
    if callback.num_rounds > 1:
        for ckpt in trainer.checkpoint_callbacks:
            if isinstance(ckpt, ModelCheckpoint) and ckpt.monitor is not None and ckpt.save_top_k not in (-1, 0):
                rank_zero_warn(
                    f"ModelCheckpoint(monitor={ckpt.monitor!r}, save_top_k={ckpt.save_top_k}) keeps the best "
                    "checkpoint(s) over all IMP rounds, comparing weights of different sparsities. To keep one "
                    "checkpoint per round (its last) use ModelCheckpoint(filename='round{tickets/round:.0f}', "
                    "auto_insert_metric_name=False, save_top_k=-1, enable_version_counter=False) (docs/callback.md, "
                    "With EarlyStopping and ModelCheckpoint); each round's mask is also in ticket_dir"
                )


def _ticket_callbacks(trainer: Any) -> list[Any]:
    from lightning_tickets.base_callback import TicketCallbackBase

    return [cb for cb in getattr(trainer, "callbacks", None) or [] if isinstance(cb, TicketCallbackBase)]


def all_finished(trainer: Any) -> bool:
    """Whether every IMP callback of ``trainer`` has finished its last round (then the fit may stop)."""
    return all(cb.state.finished for cb in _ticket_callbacks(trainer) if getattr(cb, "fixed_ticket_path", 1) is None)
