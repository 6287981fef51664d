"""The little the ticket callbacks need from Lightning's loops: a validation that a resume skipped, early stops.

Lightning restores a checkpoint saved at ``on_train_batch_end`` as if everything after that batch had run: when
the batch was the last of a round, the validation that scores the round (and, at an epoch's last batch, the epoch
end) is skipped on resume. :func:`run_missed_validation` runs that validation, so a resumed run scores the round as
the uninterrupted run did. :func:`early_stopper` names the callback that stopped a fit early.

Example:
    >>> early_stopper(type("T", (), {"callbacks": []})()) is None
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn

__all__ = ["catch_up", "early_stopper", "run_missed_validation", "warn_if_stopped_early"]


def run_missed_validation(trainer: Any) -> None:
    """Run the fit's validation loop now (as the training epoch loop does after a batch), e.g. from
    ``on_train_start`` of a resumed fit."""
    val_loop = trainer.fit_loop.epoch_loop.val_loop
    val_loop.restarting = False
    trainer.validating = True
    try:
        val_loop.run()
    finally:
        trainer.training = True


def early_stopper(trainer: Any) -> Any:
    """The ``EarlyStopping`` callback attached to ``trainer`` (the usual reason a fit stops early), or ``None``."""
    from lightning.pytorch.callbacks import EarlyStopping

    return next((cb for cb in getattr(trainer, "callbacks", None) or [] if isinstance(cb, EarlyStopping)), None)


def warn_if_stopped_early(trainer: Any, state: Any, sparsities: Sequence[float]) -> bool:
    """Say, once and when it happens, that ``EarlyStopping`` stopped the fit before IMP's last round; return whether
    it did (``state`` is the callback's :class:`~lightning_tickets.state.RunState`)."""
    stopper = early_stopper(trainer) if trainer.should_stop and not state.finished else None
    if stopper is not None and not state.early_stop_warned:
        state.early_stop_warned = True
        rank_zero_warn(
            f"{type(stopper).__name__}(monitor={getattr(stopper, 'monitor', None)!r}) stopped the fit in round "
            f"{state.round} of {len(sparsities)} (sparsity {sparsities[state.round]:.2%}): IMP did not finish. "
            "EarlyStopping compares scores across rounds of different sparsities; remove it (docs/callback.md, "
            "'With EarlyStopping and ModelCheckpoint') and resume from a checkpoint"
        )
    return stopper is not None


def catch_up(cb: Any, trainer: Any, pl_module: Any) -> None:
    """After a resume of ``cb`` (a :class:`~lightning_tickets.callback.LotteryTicketCallback`): do what Lightning
    skipped because the checkpoint was saved at a batch end: the validation that scores a round that ended there,
    and the end of an epoch whose last batch it was (``cb._epoch_end``)."""
    st = cb.state
    epoch_end_skipped = st.epoch_end_pending and st.last_val_step != trainer.global_step  # else: a val-end ckpt
    if st.finished:
        return
    if cb.steps_per_round is not None:
        unscored = st.boundary and not st.pending_transition
    else:
        unscored = epoch_end_skipped and st.epoch + 1 - st.round_start_epoch >= cb.epochs_per_round
    if unscored and cb._scored():
        run_missed_validation(trainer)  # steps mode: -> on_validation_end -> _finish_round
    if epoch_end_skipped:
        cb._epoch_end(trainer, pl_module)
