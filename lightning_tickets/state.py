"""The run state of a ticket callback: ONE dataclass that checkpoints save whole and restore whole.

Everything a callback changes while it trains lives in :class:`RunState`; the callback's other attributes are its
settings (fixed at construction) and derived objects rebuilt at every fit start (the parameters in scope, the
:class:`~lightning_tickets.layout.MaskStore`, float mask caches). :func:`state_to_dict` walks
``dataclasses.fields(RunState)``, so a new field is saved and restored without further code; only tensors that need
a layout-aware conversion (masks: bit-packed full tensors; the rewind snapshot: full tensors on the host; the random
generator: its byte state) are special-cased.

Example:
    >>> st = RunState(round=2, rows=[{"round": 0, "score": 0.9}])
    >>> sd = state_to_dict(st)
    >>> sd["version"], sd["round"]
    (2, 2)
    >>> state_from_dict(sd).rows
    [{'round': 0, 'score': 0.9}]
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from lightning_tickets.bits import pack_bits, unpack_bits

__all__ = ["STATE_VERSION", "RunState", "new_run_id", "state_from_dict", "state_to_dict"]

#: Version of the checkpointed callback state. 1: lightning-tickets <= 0.x before the run state was one dataclass
#: (no ``last_val_step`` / ``last_masked_step`` / ``run_id`` / ``settings``); 2: :class:`RunState` saved whole.
STATE_VERSION = 2

Masks = dict[str, torch.Tensor]


def new_run_id() -> str:
    """A fresh random run identity (written to the checkpoint and to ``summary.json``)."""
    return uuid.uuid4().hex[:16]


@dataclass
class RunState:
    """Everything a run changes after ``setup``: saved whole by ``state_dict``, restored whole on resume.

    Attributes:
        round: the round being trained (0 = dense).
        round_start_step / round_start_epoch: ``trainer.global_step`` / ``current_epoch`` when the round began.
        pending_transition: the round has its score; the next mask and the rewind happen at the next batch start.
        pending_optimizer_reset: fresh optimizers / LR schedulers are due at the next batch start.
        boundary: the round trained its budget and waits for the validation that scores it.
        finished: the last round has its score.
        rows: one ``summary.json`` row per finished round.
        dense_score: round 0's monitored score.
        masks: live bool masks by parameter name (``None`` while dense); local shards when sharded.
        snapshot: the rewind point (host copy; local shards when sharded).
        last_val_step: ``global_step`` of the last validation run during fit (-1: none yet).
        last_val_score: the monitored score that validation logged (``None``: not logged); a round that ends
            right after it uses it, also when the run resumed from a checkpoint saved at that validation's end.
        last_masked_step: ``global_step`` at which masks were last re-applied after an optimizer step.
        epoch: the current epoch, counted by the callback's own epoch ends (a round's row records it).
        epoch_end_pending: that batch was its epoch's last and the epoch end has not run yet (a checkpoint saved at
            that batch end resumes past the epoch end: the callback then runs its own epoch-end step).
        last_epoch_end_step: ``global_step`` at the last epoch end handled (Lightning may repeat that hook).
        generator: the random-pruning generator (``method="random"``).
        run_id: identity of this run, shared by its checkpoints and its ``summary.json``.
        settings: the callback settings the run was started with (a resume compares them).
        scope_names: the parameters in the pruning scope, in order (a resume checks the model has the same).
        early_stop_warned: an early stop before the last round has already been reported.
        score_sums: accumulated importance of the round being trained, by parameter name (``score="taylor"``:
            float32 sums of ``|w * grad|`` over its optimizer steps; empty otherwise and after each mask
            computation). Saved on the host, moved back to the parameters' devices at the next step.
        early_bird_prev: early-bird rounds: the mask of this round's last check, bit-packed (``{name: {"shape",
            "bits"}}``, local shards when sharded; see :mod:`lightning_tickets.early_bird`).
        early_bird_checks: this round's checks, ``{"step", "distance"}`` each (distance ``None`` at the first).
        early_bird_converged: the round's mask has converged: it ends at the next validation / epoch end.
    """

    round: int = 0
    round_start_step: int = 0
    round_start_epoch: int = 0
    pending_transition: bool = False
    pending_optimizer_reset: bool = False
    boundary: bool = False
    finished: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)
    dense_score: float | None = None
    masks: Masks | None = None
    snapshot: dict[str, torch.Tensor] | None = None
    last_val_step: int = -1
    last_val_score: float | None = None
    last_masked_step: int = -1
    epoch: int = 0
    epoch_end_pending: bool = False
    last_epoch_end_step: int = -1
    generator: torch.Generator = field(default_factory=torch.Generator)
    run_id: str = field(default_factory=new_run_id)
    settings: dict[str, Any] = field(default_factory=dict)
    scope_names: list[str] = field(default_factory=list)
    early_stop_warned: bool = False
    score_sums: dict[str, torch.Tensor] = field(default_factory=dict)
    early_bird_prev: dict[str, dict[str, Any]] | None = None
    early_bird_checks: list[dict[str, Any]] = field(default_factory=list)
    early_bird_converged: bool = False


def _identity(x: Any) -> Any:
    return x


def _repacked(packed: dict[str, dict[str, Any]], convert: Callable[[Masks], Masks]) -> dict[str, dict[str, Any]]:
    """Bit-packed masks passed through a full / local conversion (identity on plain layouts), packed again."""
    masks = convert({n: unpack_bits(v["bits"], v["shape"]) for n, v in packed.items()})
    return {n: {"shape": list(m.shape), "bits": pack_bits(m)} for n, m in masks.items()}


def state_to_dict(
    state: RunState,
    full_masks: Callable[[Masks], Masks] = _identity,
    full_snapshot: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] = _identity,
) -> dict[str, Any]:
    """Every field of ``state`` as checkpoint-friendly values (tensors, ints, strings, lists, dicts).

    ``full_masks`` / ``full_snapshot`` turn local shards into full tensors (collectives on sharded layouts; see
    :class:`~lightning_tickets.layout.MaskStore`). Masks are bit-packed (1 bit per weight).
    """
    out: dict[str, Any] = {"version": STATE_VERSION}
    for f in fields(RunState):
        value = getattr(state, f.name)
        if f.name == "masks" and value is not None:
            value = {n: {"shape": list(m.shape), "bits": pack_bits(m)} for n, m in full_masks(value).items()}
        elif f.name == "snapshot" and value is not None:
            value = {n: t.detach().cpu() for n, t in full_snapshot(value).items()}
        elif f.name == "score_sums":
            value = {n: t.detach().to("cpu", copy=True) for n, t in value.items()}
        elif f.name == "early_bird_prev" and value is not None:  # packed local shards -> packed full masks
            value = _repacked(value, full_masks)
        elif isinstance(value, torch.Generator):
            value = value.get_state()
        else:
            value = copy.deepcopy(value)
        out[f.name] = value
    return out


def state_from_dict(
    sd: dict[str, Any],
    local_masks: Callable[[Masks], Masks] = _identity,
    local_snapshot: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] = _identity,
) -> RunState:
    """The inverse of :func:`state_to_dict`. Fields missing from an older (version 1) checkpoint keep their defaults,
    except ``run_id``, which is then empty (unknown)."""
    version = sd.get("version", 0)
    if not isinstance(version, int) or version > STATE_VERSION:
        raise ValueError(
            f"the checkpoint holds ticket-callback state version {version!r}, newer than this lightning-tickets reads "
            f"({STATE_VERSION}); upgrade lightning-tickets"
        )
    state = RunState(run_id="")
    for f in fields(RunState):
        if f.name not in sd:
            continue
        value = sd[f.name]
        if f.name == "masks" and value is not None:
            value = local_masks({n: _unpack(n, v) for n, v in value.items()})
        elif f.name == "snapshot" and value is not None:
            value = local_snapshot(dict(value))
        elif f.name == "early_bird_prev" and value is not None:
            value = _repacked(value, local_masks)
        elif f.name == "generator":
            gen = torch.Generator()
            if value is not None:
                gen.set_state(value)
            value = gen
        else:
            value = copy.deepcopy(value)
        setattr(state, f.name, value)
    return state


def _unpack(name: str, entry: Any) -> torch.Tensor:
    try:
        return unpack_bits(entry["bits"], entry["shape"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"the checkpoint's mask state for {name!r} is corrupt ({err}); resume from another checkpoint of the run"
        ) from None
