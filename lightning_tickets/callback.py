"""``LotteryTicketCallback``: iterative magnitude pruning with weight rewinding inside any ``Trainer.fit``.

The callback only orchestrates Lightning's hooks into "a round ended" -> score, save the ticket -> (at the start of
the next round) compute the next mask, rewind, reset the optimizer. Where each thing happens (docs/dev/architecture.md):
masks are computed and applied by the :class:`~lightning_tickets.layout.MaskStore` (maths in
:mod:`lightning_tickets.masks` / :mod:`lightning_tickets.structured` via :class:`~lightning_tickets.pruner.Pruner`),
files are written by :class:`~lightning_tickets.ticket_dir.TicketDir`, round lengths are checked by
:class:`~lightning_tickets.schedule.RoundPlan`, and the run state is one :class:`~lightning_tickets.state.RunState`.

Example:
    >>> from lightning_tickets import LotteryTicketCallback
    >>> cb = LotteryTicketCallback(target_sparsity=0.5, schedule="linear", rate=0.25, epochs_per_round=1,
    ...                            monitor="val/acc")
    >>> cb.sparsities
    [0.0, 0.25, 0.5]
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional, Union

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightning_tickets.base_callback import TicketCallbackBase, _Runtime
from lightning_tickets.early_bird import EarlyBird, EarlyBirdTracker
from lightning_tickets.fixed_ticket import FixedTicketDispatch
from lightning_tickets.layout import mask_store_for, named_parameters
from lightning_tickets.loggers import log_round
from lightning_tickets.loops import catch_up, warn_if_stopped_early
from lightning_tickets.pruner import Pruner
from lightning_tickets.report import relative_score
from lightning_tickets.rewind import RewindPoint, reset_optimizers
from lightning_tickets.schedule import RoundPlan, round_length, sparsity_schedule
from lightning_tickets.scope import resolve_scope
from lightning_tickets.scores import ScoreFn, density_facts, score_name, warn_collapse
from lightning_tickets.structured import nm_schedule, parse_granularity
from lightning_tickets.trainer_checks import all_finished, check_trainer

__all__ = ["LotteryTicketCallback", "steps_per_round"]

#: Former name of :func:`lightning_tickets.schedule.round_length`.
steps_per_round = round_length


class LotteryTicketCallback(TicketCallbackBase, metaclass=FixedTicketDispatch):
    r"""Find lottery tickets by iterative magnitude pruning (IMP) with rewinding, inside ``Trainer.fit``.

    Round 0 trains dense. At the end of every round the monitored score is recorded and the round's ticket is
    written; the next round then prunes among the surviving weights (global or layer-wise magnitude, or random),
    rewinds the weights to the rewind point, resets optimizer state and LR schedulers, and trains again with the mask
    fixed. IMP ends after the round that trains at ``target_sparsity``.

    Args:
        target_sparsity: final sparsity of the pruned scope, in ``[0, 1)``.
        schedule: ``"geometric"`` (prune ``rate`` of the remaining weights per round), ``"linear"`` (``rate`` of the
            original weights per round, as the paper) or an explicit increasing list of sparsities.
        rate: fraction pruned per round, in ``(0, 1)``.
        epochs_per_round: epochs per round (exactly one of this and ``steps_per_round``).
        steps_per_round: optimizer steps per round; validation must run at each round end
            (``Trainer(val_check_interval=N, check_val_every_n_epoch=None)``).
        rewind: ``"init"`` (weights at fit start), ``"step:K"`` / ``"epoch:K"`` (late rewinding into round 0) or
            ``"none"``.
        scope: a preset name (``"encoder"``, ``"linear"``, ``"all"``) or ``dict(include=[regex], exclude=[regex],
            modules=[nn.Linear or "Linear"], parameter_names=["weight"])``; regexes match module or parameter names.
        parameter_names: which parameters of the scope's modules are pruned (default ``["weight"]``; e.g.
            ``["weight", "bias"]`` as ``ModelPruning``); overrides the scope's. Unstructured granularities only.
        granularity: ``"global"`` (one threshold over the scope), ``"layerwise"``, ``"heads"`` / ``"neurons"`` /
            ``"heads+neurons"`` (sparsity = fraction of heads / neurons removed, >= 1 kept per block) or an N:M
            pattern such as ``"2:4"`` (runs to ``1 - N/M``; the last round applies it). docs/faster-tickets.md.
        method: ``"magnitude"`` or ``"random"`` (random-pruning baseline with the same schedule).
        score: ``"magnitude"``, ``"random"``, ``"lamp"``, ``"taylor"`` or ``fn(name, param)`` (docs/scores.md).
        min_density: each tensor keeps at least this fraction of its weights (global granularity; ``0``: off).
        collapse_threshold: warn when a new mask leaves a tensor below this fraction of the scope's density.
        rewind_head: rewind parameters outside the scope too (task head, embeddings).
        reset_optimizer: fresh optimizer state and LR schedulers at every round.
        monitor: metric read from ``trainer.callback_metrics`` at each round end (``None``: no scores).
        mode: ``"max"`` or ``"min"``: which direction of ``monitor`` is better.
        tolerance: relaxed winning ticket = ``score >= tolerance * dense`` (``mode="max"``).
        ticket_dir: directory for ``round-RR.safetensors`` tickets and ``summary.json``.
        ticket, ticket_remap, ticket_mask, ticket_weights, trust_checkpoint: fixed-ticket training (the paper's
            baselines): with ``ticket=PATH`` the constructor returns a
            :class:`~lightning_tickets.fixed_ticket.FixedTicketCallback`, which documents them.
        overwrite: allow a non-empty ``ticket_dir`` from another run (its ticket files are removed first).
        seed: seed of the random-pruning generator (``method="random"``).
        snapshot_device: where the rewind snapshot lives (``"cpu"``, the default, keeps device memory free).
        plot: write ``summary.png`` (needs matplotlib) at the end of IMP.
        cpu_float_masks: on the CPU, multiply by a cached copy of the masks in the weights' dtype (~2x faster than
            bool, +4 B/weight; docs/performance.md). Accelerators always apply bool masks; saved masks are bool.
        early_bird: :class:`~lightning_tickets.early_bird.EarlyBird` (or a dict of its fields): end a round once the
            next round's mask has converged; ``one_shot=True`` draws one ticket early (docs/callback.md, Early-bird).

    Example:
        >>> cb = LotteryTicketCallback(0.7, schedule="geometric", rate=0.5, steps_per_round=100, monitor=None)
        >>> cb.sparsities
        [0.0, 0.5, 0.7]
    """

    def __init__(
        self,
        target_sparsity: Optional[float] = 0.7,
        schedule: Union[Literal["geometric", "linear"], list[float]] = "geometric",
        rate: float = 0.2,
        epochs_per_round: Optional[int] = None,
        steps_per_round: Optional[int] = None,
        rewind: str = "init",
        scope: Union[str, dict[str, Any]] = "encoder",
        parameter_names: Optional[list[str]] = None,
        granularity: str = "global",
        method: Literal["magnitude", "random"] = "magnitude",
        rewind_head: bool = True,
        reset_optimizer: bool = True,
        monitor: Optional[str] = "val/acc",
        mode: Literal["max", "min"] = "max",
        tolerance: float = 0.99,
        ticket_dir: str = "tickets",
        ticket: Optional[str] = None,
        ticket_remap: Optional[dict[str, str]] = None,
        ticket_mask: Literal["ticket", "random", "random_matched"] = "ticket",
        ticket_weights: str = "init",
        trust_checkpoint: bool = False,
        overwrite: bool = False,
        seed: int = 0,
        snapshot_device: str = "cpu",
        plot: bool = True,
        cpu_float_masks: bool = True,
        score: Union[str, ScoreFn] = "magnitude",
        min_density: float = 0.0,
        collapse_threshold: Optional[float] = 0.05,
        early_bird: Optional[EarlyBird] = None,
    ) -> None:
        if ticket_remap is not None or ticket_mask != "ticket" or ticket_weights != "init" or trust_checkpoint:
            raise ValueError(
                "ticket_remap / ticket_mask / ticket_weights / trust_checkpoint only apply with ticket=PATH"
            )
        super().__init__(
            scope=scope, parameter_names=parameter_names, monitor=monitor, mode=mode, tolerance=tolerance,
            ticket_dir=ticket_dir, overwrite=overwrite, seed=seed, snapshot_device=snapshot_device, plot=plot,
            cpu_float_masks=cpu_float_masks,
        )  # fmt: skip
        self._kind, self._nm = parse_granularity(granularity)
        self.method, self.score, self.min_density = Pruner.settings(self._kind, method, self._nm, score, min_density)
        self.collapse_threshold = None if collapse_threshold is None else float(collapse_threshold)
        if self._nm is not None:
            sparsities = nm_schedule(*self._nm, schedule, rate)
        else:
            sparsities = sparsity_schedule(target_sparsity, schedule, rate)
        self._early = EarlyBirdTracker(early_bird, self.method)
        self.early_bird, sparsities = self._early.config, self._early.schedule(sparsities)
        self.round_plan = RoundPlan.of_rounds(sparsities, epochs_per_round, steps_per_round, RewindPoint.parse(rewind))
        self.sparsities = sparsities
        self.target_sparsity = sparsities[-1]
        self.schedule = schedule if isinstance(schedule, str) else [float(s) for s in schedule]
        self.rate = float(rate)
        self.epochs_per_round = epochs_per_round
        self.steps_per_round = steps_per_round
        self.rewind = self.round_plan.rewind
        self.granularity = granularity
        self.rewind_head = bool(rewind_head)
        self.reset_optimizer = bool(reset_optimizer)
        self.fixed_ticket_path = None  # fixed-ticket training is FixedTicketCallback

    def _settings(self) -> dict[str, Any]:
        return {"sparsities": self.sparsities, "rewind": str(self.rewind), "method": self.method,
                "score": score_name(self.score), "min_density": self.min_density, "granularity": self.granularity,
                "epochs_per_round": self.epochs_per_round, "steps_per_round": self.steps_per_round,
                "rewind_head": self.rewind_head, "reset_optimizer": self.reset_optimizer,
                "early_bird": self._early.settings(), "scope": self.scope.to_dict(), **super()._settings()}  # fmt: skip

    # ------------------------------------------------------------------ start
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Find the scope and its layout (refusing impossible set-ups before the sanity check)."""
        all_params = named_parameters(pl_module)
        params = dict(resolve_scope(pl_module, self.scope))
        pruner = Pruner(self._kind, self.method, self._nm, generator=self.state.generator, score=self.score,
                        min_density=self.min_density, sums=self.state.score_sums)  # fmt: skip
        store = mask_store_for(params, pruner, self.cpu_float_masks)  # refuses what a sharded layout can't do
        pruner.prepare(pl_module, params, self.sparsities)
        check_trainer(trainer, pl_module, self, list(params))  # other ticket callbacks, monitored ModelCheckpoint
        self._run = _Runtime(store, all_params, self._validates(trainer, pl_module))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Restore a checkpoint's run, or start a new one (θ0 from rank 0, the rewind snapshot). Done here, not at
        fit start, because strategies that restore after setup (FSDP2) have loaded the checkpoint only now."""
        self._run.all_params = all_params = named_parameters(pl_module)
        params = self._run.store.params
        resuming = self._loaded is not None
        if resuming:
            self._restore(pl_module)
        st = self.state
        if not st.finished:
            self.round_plan.check(trainer, self.monitor, self._run.validates, from_round=st.round)
            self._early.check_trainer(trainer, self.round_plan, self._scored())
        self._ticket_dir().prepare(
            trainer.strategy, trainer.is_global_zero, st.run_id, len(st.rows) if resuming else None
        )
        if resuming:
            rank_zero_info(
                f"[lightning-tickets] resumed run {st.run_id or '(no id)'} in round {st.round} at sparsity "
                f"{self.sparsities[min(st.round, self.num_rounds - 1)]:.2%}"
            )
            catch_up(self, trainer, pl_module)
            return
        st.settings, st.scope_names = self._settings(), list(params)
        # θ0 must be identical on every rank (rank 0's): before the snapshot
        self._run.store.broadcast_weights(all_params)
        if self.rewind.kind == "init":
            st.snapshot = self._take_snapshot(pl_module)
        st.epoch = trainer.current_epoch
        st.round_start_step, st.round_start_epoch = trainer.global_step, st.epoch
        n = sum(p.numel() for p in params.values())
        rank_zero_info(
            f"[lightning-tickets] IMP over {len(params)} tensors / {n:,} weights (scope {self.scope.name!r}"
            f"{self._run.store.describe()}); {self.num_rounds} rounds at sparsities {self.round_plan.describe()}, "
            f"rewind={self.rewind}, method={self.method}"
            + ("" if self.granularity == "global" else f", granularity={self.granularity}")
        )

    def _take_snapshot(self, pl_module: pl.LightningModule) -> dict:
        params = named_parameters(pl_module)
        names = list(params) if self.rewind_head else list(self._params)
        return self._run.store.snapshot({n: params[n] for n in names}, self.snapshot_device)

    # ------------------------------------------------------------------ training hooks
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        st = self.state
        if st.boundary and not st.pending_transition and not st.finished:
            raise RuntimeError(
                f"round {st.round} ended at step {trainer.global_step} but no validation ran there, so its score "
                f"({self.monitor!r}) is unknown. Make validation run at every round end: with steps_per_round="
                f"{self.steps_per_round} set Trainer(val_check_interval={self.steps_per_round}, "
                "check_val_every_n_epoch=None); with epochs_per_round, check_val_every_n_epoch must divide it"
            )
        if st.pending_transition:
            self._transition(trainer, pl_module)
        if st.pending_optimizer_reset:
            reset_optimizers(trainer)
            st.pending_optimizer_reset = False

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        st = self.state
        if st.finished:
            return
        st.epoch_end_pending = batch_idx + 1 >= trainer.num_training_batches
        done = trainer.global_step - st.round_start_step
        if self.rewind.kind == "step" and st.round == 0 and st.snapshot is None and done >= self.rewind.k:
            st.snapshot = self._take_snapshot(pl_module)
        early = self._early.on_batch_end(self, trainer, pl_module, done) and not self._scored()  # else: at validation
        if self.steps_per_round is not None and (done >= self.steps_per_round or early) and not st.boundary:
            st.boundary = True
            if not self._scored():
                self._finish_round(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        st = self.state
        ends = st.boundary or st.early_bird_converged  # early-bird: the first validation after convergence
        if trainer.state.fn == "fit" and not trainer.sanity_checking and ends and not st.pending_transition:
            if self.steps_per_round is not None and not st.finished:
                self._finish_round(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step == self.state.last_epoch_end_step:
            return  # Lightning re-runs the epoch end of a checkpoint saved there: already done
        self._epoch_end(trainer, pl_module)
        warn_if_stopped_early(trainer, self.state, self.sparsities)

    def _epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The end of epoch ``state.epoch`` (the callback counts epoch ends itself: Lightning runs an epoch end twice
        around a checkpoint saved there, and skips it for one saved at the epoch's last batch end)."""
        st = self.state
        st.epoch_end_pending, st.last_epoch_end_step, epoch = False, trainer.global_step, st.epoch
        try:
            self._round_epoch_end(trainer, pl_module, epoch)
        finally:
            st.epoch = epoch + 1  # rows of rounds ending here record ``epoch``; the next round starts in epoch + 1

    def _round_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        st = self.state
        if st.finished:
            return
        done = epoch + 1 - st.round_start_epoch
        if self.rewind.kind == "epoch" and st.round == 0 and st.snapshot is None and done >= self.rewind.k:
            st.snapshot = self._take_snapshot(pl_module)
        early = st.early_bird_converged and (not self._scored() or st.last_val_step == trainer.global_step)
        if self.epochs_per_round is None or (done < self.epochs_per_round and not early):
            return
        st.boundary = True
        if self._scored() and st.last_val_step != trainer.global_step:
            raise RuntimeError(
                f"round {st.round} ended after epoch {epoch} but validation did not run at its end, so its score "
                f"({self.monitor!r}) is unknown; set check_val_every_n_epoch to a divisor of "
                f"epochs_per_round={self.epochs_per_round}"
            )
        self._finish_round(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._loaded is not None:  # resumed at the very last step: Lightning skipped training (and its hooks)
            self.on_train_start(trainer, pl_module)
            self.on_train_end(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        st = self.state
        if not st.finished and not warn_if_stopped_early(trainer, self.state, self.sparsities):
            rank_zero_warn(
                f"training stopped before IMP finished: {len(st.rows)} of {self.num_rounds} rounds have a score "
                f"(sparsities {self.round_plan.describe()}). Resume from a checkpoint or raise max_epochs/max_steps."
            )
        if trainer.is_global_zero:
            self._ticket_dir().write_summary(self._summary())
            print(self._ticket_dir().report(self._summary(), self.plot, trainer), flush=True)

    def _scored(self) -> bool:
        return self._run is not None and self._run.validates and self.monitor is not None

    # ------------------------------------------------------------------ round logic
    def _finish_round(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        st, store = self.state, self._run.store
        score = None if st.round > 0 and self._early.one_shot else self._round_score(trainer)  # one-shot: untrained
        if score is not None and math.isnan(score):
            rank_zero_warn(
                f"round {st.round}'s score {self.monitor}={score} is not a number: recorded as null in summary.json "
                "(a failed round, never a winning ticket). Check the model / learning rate of this round"
            )
            score = None
        if st.round == 0:
            st.dense_score = score
        masks = st.masks if st.masks is not None else store.ones()
        row = {
            "round": st.round,
            "sparsity": store.sparsity(masks),
            "score": score,
            "relative": relative_score(score, st.dense_score),
            "ticket": self._ticket_dir().round_path(st.round).name,
            "step": trainer.global_step,
            "epoch": st.epoch,
            **density_facts(store.densities(masks), self.collapse_threshold),
            **self._early.close_round(st, trainer, self.round_plan),
        }
        st.rows.append(row)
        log_round(trainer, st.rows, st.dense_score, self.tolerance, self.mode)
        full = store.full_masks(masks)  # a collective on sharded layouts: every rank takes part
        if trainer.is_global_zero:
            self._ticket_dir().write_round(st.round, full, self._ticket_metadata(trainer, pl_module, score))
        st.boundary = False
        if st.round == self.num_rounds - 1:
            st.finished = True
            trainer.should_stop |= all_finished(trainer)  # another ticket callback may have rounds to go
        else:
            st.pending_transition = True
        if trainer.is_global_zero:
            self._ticket_dir().write_summary(self._summary())
        rel = row["relative"]
        rank_zero_info(
            f"[lightning-tickets] round {st.round} done: sparsity {row['sparsity']:.2%}"
            + ("" if score is None else f", {self.monitor}={score:.4f}")
            + ("" if rel is None else f" ({rel:.3f} of dense)")
        )
        if self._early.one_shot and st.pending_transition:  # draw the ticket now from the trained weights, stop
            self._transition(trainer, pl_module)
            self._finish_round(trainer, pl_module)

    def _transition(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the next round: new mask from the trained weights, rewind, zero pruned weights, schedule a reset."""
        st, store = self.state, self._run.store
        nxt = st.round + 1
        params = named_parameters(pl_module)  # FSDP2: resharded, so the next forward gathers the new shards
        new = store.compute(st.masks, self.sparsities[nxt], final=nxt == self.num_rounds - 1)
        warn_collapse(store.densities(new), self.collapse_threshold, nxt)
        if self.rewind.kind != "none":
            if st.snapshot is None:
                raise RuntimeError(f"no rewind snapshot was taken for rewind='{self.rewind}' (round 0 too short?)")
            store.rewind(params, st.snapshot)
        st.masks = new
        store.apply(new)
        st.round = nxt
        st.round_start_step, st.round_start_epoch = trainer.global_step, st.epoch
        st.pending_transition = False
        st.pending_optimizer_reset = self.reset_optimizer
        st.last_masked_step = trainer.global_step

    def _run_info(self) -> dict[str, Any]:
        return {**super()._run_info(), "method": self.method, "granularity": self.granularity,
                "rewind": str(self.rewind), "schedule": self.schedule, "rate": self.rate,
                "pruning_score": score_name(self.score), "min_density": self.min_density,
                "collapse_threshold": self.collapse_threshold, "early_bird": self._early.settings()}  # fmt: skip
