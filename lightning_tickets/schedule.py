"""Sparsity schedules: which sparsity each pruning round trains at.

Round 0 always trains dense (sparsity 0). Round ``r >= 1`` trains at ``schedule[r]``. The last round trains exactly at
the target sparsity (the last step is clipped to it and never overshoots).

Example:
    >>> sparsity_schedule(0.5, "geometric", rate=0.2)
    [0.0, 0.2, 0.36, 0.488, 0.5]
    >>> sparsity_schedule(0.3, "linear", rate=0.1)
    [0.0, 0.1, 0.2, 0.3]
    >>> sparsity_schedule(None, [0.2, 0.5])
    [0.0, 0.2, 0.5]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lightning_tickets.rewind import RewindPoint

SCHEDULES = ("geometric", "linear")
_EPS = 1e-9
#: Most rounds a schedule may have (a tiny ``rate`` would otherwise build a schedule of millions of rounds).
MAX_ROUNDS = 1000


def _check_fraction(name: str, value: float, *, low_open: bool, hint: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not a number; {hint}") from None
    ok = (0.0 < value < 1.0) if low_open else (0.0 <= value < 1.0)
    if not ok:
        bounds = "(0, 1)" if low_open else "[0, 1)"
        raise ValueError(f"{name}={value!r} is outside {bounds}; {hint}")
    return value


def sparsity_schedule(
    target_sparsity: float | None,
    schedule: str | Sequence[float] = "geometric",
    rate: float = 0.2,
) -> list[float]:
    """Return the sparsity of every round, round 0 (dense) first.

    Args:
        target_sparsity: final sparsity in ``[0, 1)``. With an explicit list it may be ``None`` (the list's last value)
            or must equal the list's last value.
        schedule: ``"geometric"`` prunes ``rate`` of the *remaining* weights each round (open_lth);
            ``"linear"`` prunes ``rate`` of the *original* weights each round (the paper, BERT-Tickets);
            or an explicit strictly increasing list of sparsities in ``(0, 1)``.
        rate: fraction pruned per round, in ``(0, 1)``; ignored for an explicit list.

    Raises:
        ValueError: naming the bad value and the accepted range.
    """
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise ValueError(
                f"schedule={schedule!r} is unknown; use 'geometric', 'linear' or an increasing list of sparsities "
                "such as [0.2, 0.4, 0.6]"
            )
        if target_sparsity is None:
            raise ValueError(f"target_sparsity is required with schedule={schedule!r}; pass e.g. target_sparsity=0.7")
        target = _check_fraction("target_sparsity", target_sparsity, low_open=False, hint="pass e.g. 0.7 for 70%")
        rate = _check_fraction("rate", rate, low_open=True, hint="pass e.g. rate=0.2 to prune 20% per round")
        rounds = math.log1p(-target) / math.log1p(-rate) if schedule == "geometric" else target / rate
        if rounds > MAX_ROUNDS:
            raise ValueError(
                f"schedule={schedule!r} with rate={rate!r} needs about {rounds:,.0f} rounds to reach target_sparsity="
                f"{target}; at most {MAX_ROUNDS} are allowed. Use a larger rate (e.g. rate=0.2)"
            )
        out = [0.0]
        r = 1
        while out[-1] < target - _EPS:
            s = 1.0 - (1.0 - rate) ** r if schedule == "geometric" else r * rate
            s = round(s, 12)
            out.append(min(s, target))
            r += 1
        return out
    values = list(schedule)
    if not values:
        raise ValueError("schedule=[] is empty; give at least one sparsity, e.g. [0.5]")
    checked = [
        _check_fraction(f"schedule[{i}]", v, low_open=True, hint="explicit sparsities must lie in (0, 1)")
        for i, v in enumerate(values)
    ]
    for i in range(1, len(checked)):
        if checked[i] <= checked[i - 1]:
            raise ValueError(
                f"schedule={values} is not strictly increasing at index {i} ({checked[i - 1]} -> {checked[i]}); "
                "sort it and remove duplicates"
            )
    if target_sparsity is not None:
        target = _check_fraction("target_sparsity", target_sparsity, low_open=False, hint="pass e.g. 0.7 for 70%")
        if abs(target - checked[-1]) > _EPS:
            raise ValueError(
                f"target_sparsity={target_sparsity} differs from the explicit schedule's last value {checked[-1]}; "
                "make them equal or pass target_sparsity=None"
            )
    return [0.0, *checked]


@dataclass(frozen=True)
class RoundPlan:
    """How long every round trains and what the Trainer must do for it: checked once, when training starts.

    Args:
        sparsities: sparsity of every round, round 0 first (see :func:`sparsity_schedule`).
        epochs_per_round / steps_per_round: the round length (exactly one; both ``None``: one round = the whole fit,
            as fixed-ticket training does).
        rewind: the rewind point (late rewinding must land inside round 0).

    Example:
        >>> plan = RoundPlan([0.0, 0.5], steps_per_round=100)
        >>> plan.num_rounds, plan.total_steps
        (2, 200)
    """

    sparsities: Sequence[float]
    epochs_per_round: int | None = None
    steps_per_round: int | None = None
    rewind: RewindPoint = field(default_factory=lambda: RewindPoint.parse("init"))

    def __post_init__(self) -> None:
        for name, v in (("epochs_per_round", self.epochs_per_round), ("steps_per_round", self.steps_per_round)):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"{name}={v!r} must be a positive integer")
        if self.epochs_per_round is not None and self.steps_per_round is not None:
            raise ValueError(
                f"give exactly one of epochs_per_round and steps_per_round (got epochs_per_round="
                f"{self.epochs_per_round}, steps_per_round={self.steps_per_round}); e.g. epochs_per_round=1"
            )
        per = self.epochs_per_round if self.rewind.kind == "epoch" else self.steps_per_round
        if self.rewind.kind in ("epoch", "step") and per is not None and self.rewind.k >= per:
            unit = "epochs_per_round" if self.rewind.kind == "epoch" else "steps_per_round"
            raise ValueError(f"rewind='{self.rewind}' points past round 0 ({unit}={per}); use K < {per}")

    @classmethod
    def of_rounds(
        cls, sparsities: Sequence[float], epochs_per_round: int | None, steps_per_round: int | None, rewind: RewindPoint
    ) -> RoundPlan:
        """A plan of IMP rounds: exactly one of ``epochs_per_round`` / ``steps_per_round`` must be given."""
        if (epochs_per_round is None) == (steps_per_round is None):
            raise ValueError(
                f"give exactly one of epochs_per_round and steps_per_round (got epochs_per_round="
                f"{epochs_per_round}, steps_per_round={steps_per_round}); e.g. epochs_per_round=1"
            )
        return cls(sparsities, epochs_per_round, steps_per_round, rewind)

    @property
    def num_rounds(self) -> int:
        """Rounds including the dense round 0."""
        return len(self.sparsities)

    @property
    def total_steps(self) -> int | None:
        """``num_rounds * steps_per_round`` in steps mode, else ``None``."""
        return None if self.steps_per_round is None else self.num_rounds * self.steps_per_round

    def describe(self) -> str:
        """The sparsities as a short list, e.g. ``[0, 0.5, 0.75]``."""
        return "[" + ", ".join(f"{s:.4g}" for s in self.sparsities) + "]"

    def steps(self, trainer: Any) -> int:
        """Optimizer steps in one round (epochs mode: from the number of training batches)."""
        if self.steps_per_round is not None:
            return self.steps_per_round
        if self.epochs_per_round is None:  # one round = the whole fit
            return int(trainer.estimated_stepping_batches)
        batches = trainer.num_training_batches
        if batches == float("inf"):  # data not set up yet (configure_optimizers runs first): let Lightning do it
            _ = trainer.estimated_stepping_batches
            batches = trainer.num_training_batches
        if batches == float("inf") or batches is None:
            raise ValueError("epochs_per_round needs a dataloader with a length; use steps_per_round instead")
        return self.epochs_per_round * _steps_per_epoch(trainer, int(batches))

    def check(self, trainer: Any, monitor: str | None, validates: bool, from_round: int = 0) -> None:
        """Refuse, before training, a Trainer that cannot run the plan: too few epochs / steps, late rewinding past
        round 0, or (``monitor`` set and ``validates``) no validation at the end of some round.

        Raises:
            ValueError: naming the Trainer setting and the value that fixes it.
        """
        if self.epochs_per_round is None and self.steps_per_round is None:
            return
        scored = validates and monitor is not None
        if self.epochs_per_round is not None:
            need = self.num_rounds * self.epochs_per_round
            if trainer.max_epochs not in (None, -1) and trainer.max_epochs < need:
                raise ValueError(
                    f"Trainer(max_epochs={trainer.max_epochs}) cannot fit {self.num_rounds} rounds x epochs_per_round="
                    f"{self.epochs_per_round}: set max_epochs >= {need} (sparsities {self.describe()})"
                )
            every = trainer.check_val_every_n_epoch
            if scored and every is not None and self.epochs_per_round % every:
                raise ValueError(
                    f"check_val_every_n_epoch={every} does not divide epochs_per_round={self.epochs_per_round}: the "
                    "score of a round must come from a validation at its end; set check_val_every_n_epoch=1"
                )
        need_steps = self.num_rounds * self.steps(trainer)
        if trainer.max_steps != -1 and trainer.max_steps < need_steps:
            raise ValueError(
                f"Trainer(max_steps={trainer.max_steps}) cannot fit {self.num_rounds} rounds x {self.steps(trainer)} "
                f"steps: set max_steps >= {need_steps} (sparsities {self.describe()})"
            )
        if self.rewind.kind in ("step", "epoch") and from_round == 0:
            nb = trainer.num_training_batches
            k = (
                self.rewind.k
                if self.rewind.kind == "step"
                else (self.rewind.k * _steps_per_epoch(trainer, nb) if isinstance(nb, int) else 0)
            )
            if k >= self.steps(trainer):
                raise ValueError(
                    f"rewind='{self.rewind}' points past round 0, which has {self.steps(trainer)} optimizer steps; "
                    "use a smaller K"
                )
        if scored and self.steps_per_round is not None:
            self._check_validation_at_round_ends(trainer, monitor, from_round)

    def _check_validation_at_round_ends(self, trainer: Any, monitor: str | None, from_round: int) -> None:
        vci, acc = trainer.val_check_interval, max(1, int(trainer.accumulate_grad_batches))
        batches = self.steps_per_round * acc  # val_check_interval counts training batches, not optimizer steps
        if isinstance(vci, int) and trainer.check_val_every_n_epoch is None and batches % vci != 0:
            raise ValueError(
                f"steps_per_round={self.steps_per_round}"
                + (f" ({batches} batches)" if acc > 1 else "")
                + f" is not a multiple of val_check_interval={vci}: the score of a round must come from a validation "
                f"at its end; set val_check_interval={batches}"
            )
        nb, vcb = trainer.num_training_batches, trainer.val_check_batch
        if not isinstance(nb, int) or nb < 1 or vcb is None or vcb == float("inf"):
            return  # unknown lengths: the check at each round end still applies
        every = trainer.check_val_every_n_epoch
        for k in range(from_round + 1, self.num_rounds + 1):
            t = k * self.steps_per_round * acc - 1  # index of the last batch of round k-1
            epoch, bi = divmod(t, nb)
            if every is None:
                ok = (t + 1) % int(vcb) == 0
            else:
                ok = (epoch + 1) % every == 0 and (bi + 1) % int(vcb) == 0  # as Lightning's _should_check_val_fx
            if not ok:
                raise ValueError(
                    f"round {k} ends at step {k * self.steps_per_round} (epoch {epoch}, batch {bi}) but no validation "
                    f"is scheduled there, so the round's score ({monitor!r}) would be unknown. Set "
                    f"Trainer(val_check_interval={self.steps_per_round * acc}, check_val_every_n_epoch=None)"
                )


def _steps_per_epoch(trainer: Any, batches: int) -> int:
    return max(1, math.ceil(int(batches) / max(1, int(trainer.accumulate_grad_batches))))


def round_length(trainer: Any) -> int | None:
    """Optimizer steps in one round when a ticket callback is attached to ``trainer``, else ``None``.

    Tasks use it to make their LR schedule (warm-up + decay) span one round, since the schedule restarts every round.

    Example:
        >>> round_length(object()) is None  # no callbacks
        True
    """
    for cb in getattr(trainer, "callbacks", None) or []:
        plan = getattr(cb, "round_plan", None)
        if isinstance(plan, RoundPlan):
            return plan.steps(trainer)
    return None


#: Former name of :func:`round_length` (kept for compatibility).
steps_per_round = round_length
