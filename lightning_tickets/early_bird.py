"""Early-bird rounds: end an IMP round as soon as the mask the next round would get has stopped changing.

You et al. ("Drawing Early-Bird Tickets", ICLR 2020) and Chen et al. ("EarlyBERT", ACL 2021) observe that the
magnitude mask converges long before training does. With ``LotteryTicketCallback(..., early_bird=EarlyBird(...))``,
every ``every`` optimizer steps of a round the callback computes the mask the next round would get (through the
:class:`~lightning_tickets.layout.MaskStore`: the same exact global threshold, on the current weights, no copy of the
weights kept) and its normalised Hamming distance to the previous such mask: the fraction of the weights in scope
whose kept / pruned bit differs. When ``window`` consecutive distances are below ``threshold`` the round ends early
(validate, prune, rewind as usual). With ``one_shot=True`` the run trains the dense model once, draws the ticket at
the target sparsity as soon as that mask has converged, writes it and stops (EarlyBERT's use).

:class:`EarlyBird` holds the settings (LightningCLI reads it from yaml as a nested ``early_bird:`` mapping);
:class:`EarlyBirdTracker` does the checks. The tracker keeps no state of its own: the previous mask (bit-packed), the
distances and the decision are fields of :class:`~lightning_tickets.state.RunState`, so they survive a checkpoint.
The rules for *when* a converged round ends (next validation in steps mode, next validated epoch end in epochs mode)
are in docs/callback.md, "Early-bird rounds".

Example:
    >>> import torch
    >>> a = {"w": torch.tensor([True, True, False, False])}
    >>> b = {"w": torch.tensor([True, False, True, False])}
    >>> hamming_distance(a, b)
    0.5
    >>> EarlyBird(every=10, threshold=0.01, window=2)
    EarlyBird(every=10, threshold=0.01, window=2, one_shot=False)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn

from lightning_tickets.bits import pack_bits

__all__ = ["EarlyBird", "EarlyBirdTracker", "hamming_distance", "packed_distance"]

Masks = Mapping[str, torch.Tensor]
Packed = Mapping[str, Mapping[str, Any]]  # {name: {"shape": [...], "bits": uint8 tensor}} (see bits.pack_bits)


def _popcount(x: torch.Tensor) -> int:
    """Set bits in a ``uint8`` tensor (SWAR bit counting per byte: no wider temporary than the input)."""
    x = x - ((x >> 1) & 0x55)
    x = (x & 0x33) + ((x >> 2) & 0x33)
    x = (x + (x >> 4)) & 0x0F
    return int(x.sum(dtype=torch.int64))


@dataclass(frozen=True)
class EarlyBird:
    """Settings of early-bird rounds.

    Args:
        every: optimizer steps between two mask checks (counted from the round's start).
        threshold: a check "agrees" when the normalised Hamming distance to the previous check's mask is below
            this, in ``(0, 1)``.
        window: consecutive agreeing checks that end the round (so the earliest end is after ``window + 1`` checks).
        one_shot: train the dense model once and stop as soon as the mask at the *target* sparsity has converged,
            writing that ticket as ``round-01.safetensors`` (the schedule becomes ``[0, target]``; the ticket is
            not trained in this fit: train it with ``LotteryTicketCallback(ticket=...)``).

    Example:
        >>> EarlyBird.parse({"every": 20, "one_shot": True})
        EarlyBird(every=20, threshold=0.02, window=3, one_shot=True)
    """

    every: int = 50
    threshold: float = 0.02
    window: int = 3
    one_shot: bool = False

    def __post_init__(self) -> None:
        for name in ("every", "window"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"EarlyBird({name}={v!r}) must be a positive integer, e.g. {name}=3")
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 < float(t) < 1.0:
            raise ValueError(f"EarlyBird(threshold={t!r}) must lie in (0, 1); You et al. use 0.1, e.g. threshold=0.02")
        if not isinstance(self.one_shot, bool):
            raise ValueError(f"EarlyBird(one_shot={self.one_shot!r}) must be True or False")

    @classmethod
    def parse(cls, value: EarlyBird | Mapping[str, Any] | None) -> EarlyBird | None:
        """An :class:`EarlyBird` from itself, a mapping of its fields, or ``None`` (early-bird rounds off)."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(cls.__dataclass_fields__))
            if unknown:
                raise ValueError(f"early_bird has unknown keys {unknown}; use {sorted(cls.__dataclass_fields__)}")
            return cls(**value)
        raise TypeError(f"early_bird={value!r} must be an EarlyBird, a dict of its fields, or None")


def _pack(masks: Masks) -> dict[str, dict[str, Any]]:
    return {n: {"shape": list(m.shape), "bits": pack_bits(m)} for n, m in masks.items()}


def packed_distance(a: Packed, b: Packed) -> tuple[int, int]:
    """``(differing bits, total bits)`` between two bit-packed masks over the same names and shapes.

    Example:
        >>> import torch
        >>> a = {"w": {"shape": [3], "bits": pack_bits(torch.tensor([True, False, True]))}}
        >>> b = {"w": {"shape": [3], "bits": pack_bits(torch.tensor([True, True, False]))}}
        >>> packed_distance(a, b)
        (2, 3)
    """
    if list(a) != list(b):
        raise ValueError(f"the two masks cover different parameters: {sorted(set(a) ^ set(b))[:5]}")
    diff = total = 0
    for n, x in a.items():
        y = b[n]
        if list(x["shape"]) != list(y["shape"]):
            raise ValueError(f"mask {n!r} has shape {list(x['shape'])} in one mask and {list(y['shape'])} in the other")
        diff += _popcount(torch.bitwise_xor(x["bits"], y["bits"]))  # padding bits are 0 in both
        numel = 1
        for s in x["shape"]:
            numel *= int(s)
        total += numel
    return diff, total


def hamming_distance(a: Masks, b: Masks) -> float:
    """Normalised Hamming distance of two bool masks: the fraction of all their weights whose bit differs."""
    diff, total = packed_distance(_pack(a), _pack(b))
    return 0.0 if total == 0 else diff / total


class EarlyBirdTracker:
    """The checks of early-bird rounds for one callback (a no-op when ``config`` is ``None``).

    Args:
        config: the settings (an :class:`EarlyBird`, a dict of its fields, or ``None``: off).
        method: the callback's pruning method (``"random"`` is refused: a random mask does not depend on training).
    """

    def __init__(self, config: EarlyBird | Mapping[str, Any] | None, method: str = "magnitude") -> None:
        self.config = EarlyBird.parse(config)
        if self.config is not None and method != "magnitude":
            raise ValueError(
                f"early_bird needs method='magnitude' (got method={method!r}): a random mask does not depend on the "
                "weights, so there is nothing to converge; drop early_bird for the random-pruning baseline"
            )

    @property
    def one_shot(self) -> bool:
        return self.config is not None and self.config.one_shot

    def schedule(self, sparsities: Sequence[float]) -> list[float]:
        """The round sparsities to run: ``[0, target]`` in one-shot mode, else unchanged."""
        return [0.0, float(sparsities[-1])] if self.one_shot else list(sparsities)

    def settings(self) -> dict[str, Any] | None:
        """The settings as a dict (``None`` when off), for the checkpoint and ``summary.json``."""
        return None if self.config is None else asdict(self.config)

    def check_trainer(self, trainer: Any, plan: Any, scored: bool) -> None:
        """Refuse (before training) a Trainer on which an early end could skip the validation that scores the round,
        and warn when no round is long enough to end early.

        Raises:
            ValueError: steps mode, scored, and validation not on a fixed step grid (``check_val_every_n_epoch``).
        """
        cfg = self.config
        if cfg is None:
            return
        if plan.steps_per_round is not None and scored and trainer.check_val_every_n_epoch is not None:
            raise ValueError(
                "early_bird with steps_per_round ends a round at the first validation after its mask converged, so "
                "validation must run on a fixed step grid: set Trainer(val_check_interval=N, "
                f"check_val_every_n_epoch=None) with N dividing steps_per_round={plan.steps_per_round} (e.g. "
                f"N={cfg.every} checks for an early end at every mask check)"
            )
        steps = plan.steps(trainer)
        if (cfg.window + 1) * cfg.every >= steps:
            rank_zero_warn(
                f"early_bird(every={cfg.every}, window={cfg.window}) needs {(cfg.window + 1) * cfg.every} steps of a "
                f"round before it can end it, but a round has {steps}: no round will end early; lower every / window"
            )
        vcb = trainer.val_check_batch
        if (
            plan.steps_per_round is not None
            and scored
            and isinstance(vcb, int)
            and vcb >= steps * max(1, int(trainer.accumulate_grad_batches))
        ):
            rank_zero_warn(
                f"early_bird: validation runs every {vcb} batches, only at round ends, and a round ends early only "
                f"at a validation: no round will end early. Set val_check_interval to a divisor of steps_per_round "
                f"such as {cfg.every}"
            )

    def on_batch_end(self, callback: Any, trainer: Any, pl_module: Any, done: int) -> bool:
        """Run a check when one is due (``done`` optimizer steps into a round that has a next round), log it, and
        return whether the round's mask has converged (``callback.state.early_bird_converged``).

        ``callback``: the :class:`~lightning_tickets.LotteryTicketCallback` (its state, sparsities, rewind point and
        mask store). A round with late rewinding never converges before its rewind point is taken.
        """
        cfg, state, sparsities = self.config, callback.state, callback.sparsities
        nxt = state.round + 1
        if cfg is None or state.early_bird_converged or nxt >= len(sparsities) or done <= 0 or done % cfg.every:
            return state.early_bird_converged
        if callback.steps_per_round is not None and done >= callback.steps_per_round:
            return False  # the round ends here anyway
        step = int(trainer.global_step)
        if state.early_bird_checks and state.early_bird_checks[-1]["step"] == step:
            return False  # gradient accumulation: several batches end at this optimizer step
        ready = state.snapshot is not None or callback.rewind.kind == "none"
        final = nxt == len(sparsities) - 1
        store = callback._run.store
        distance = self.check(store, state, sparsities[nxt], final, step, ready, trainer.strategy.broadcast)
        if distance is not None:
            pl_module.log("tickets/early_bird_distance", distance, on_step=True, on_epoch=False)
        return state.early_bird_converged

    def check(
        self,
        store: Any,
        state: Any,
        next_target: float,
        final: bool,
        step: int,
        ready: bool = True,
        broadcast: Callable[[Any], Any] | None = None,
    ) -> float | None:
        """One check: compute the next round's mask, its distance to the previous check's mask, record both in
        ``state`` and decide (rank 0's values, through ``broadcast``) whether the round has converged.

        Returns:
            the distance (``None`` at a round's first check).
        """
        cfg = self.config
        assert cfg is not None
        new = _pack(store.compute(state.masks, next_target, final))
        distance = None
        if state.early_bird_prev is not None:
            diff, total = packed_distance(state.early_bird_prev, new)
            diff, total = (int(v) for v in store.count_sum(torch.tensor([diff, total], dtype=torch.int64)))
            distance = 0.0 if total == 0 else diff / total
        state.early_bird_prev = new
        below = 1 if distance is not None and distance < cfg.threshold else 0
        if below:
            for c in reversed(state.early_bird_checks):
                if c["distance"] is None or c["distance"] >= cfg.threshold:
                    break
                below += 1
        converged = bool(ready and below >= cfg.window)
        if broadcast is not None:
            distance, converged = broadcast((distance, converged))
        state.early_bird_checks.append({"step": step, "distance": distance})
        state.early_bird_converged = converged
        return distance

    def close_round(self, state: Any, trainer: Any, plan: Any) -> dict[str, Any]:
        """The ``early_bird`` entry of the finishing round's ``summary.json`` row (``{}`` when off); clears the
        round's history for the next round."""
        if self.config is None:
            return {}
        steps = int(trainer.global_step) - state.round_start_step
        if plan.steps_per_round is not None:
            short = steps < plan.steps_per_round
        else:
            short = trainer.current_epoch + 1 - state.round_start_epoch < plan.epochs_per_round
        if self.one_shot and state.round == 0 and not state.early_bird_converged:
            rank_zero_warn(
                f"early_bird one_shot: the mask at the target sparsity did not converge (threshold "
                f"{self.config.threshold}, window {self.config.window}) within round 0's budget; the ticket is drawn "
                "at the budget's end. Raise the round length or the threshold"
            )
        entry = {
            "steps": steps,
            "ended_early": bool(state.early_bird_converged and short),
            "converged_step": state.early_bird_checks[-1]["step"] if state.early_bird_converged else None,
            "check_steps": [c["step"] for c in state.early_bird_checks],
            "distances": [c["distance"] for c in state.early_bird_checks],
        }
        state.early_bird_prev, state.early_bird_checks, state.early_bird_converged = None, [], False
        return {"early_bird": entry}
