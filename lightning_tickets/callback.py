"""``LotteryTicketCallback``: iterative magnitude pruning with weight rewinding inside any ``Trainer.fit``.

The callback only orchestrates Lightning's hooks into "a round ended" → score, save the ticket → (at the start of the
next round) compute the next mask, rewind, reset the optimizer. The maths lives in :mod:`lightning_tickets.masks`
(unstructured) and :mod:`lightning_tickets.structured` (heads, neurons, N:M),
snapshots in :mod:`lightning_tickets.rewind`, files in :mod:`lightning_tickets.ticket` and
:mod:`lightning_tickets.report`, collectives in :mod:`lightning_tickets.distributed`.

Example:
    >>> from lightning_tickets import LotteryTicketCallback
    >>> cb = LotteryTicketCallback(target_sparsity=0.5, schedule="linear", rate=0.25, epochs_per_round=1,
    ...                            monitor="val/acc")
    >>> cb.sparsities
    [0.0, 0.25, 0.5]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.model_helpers import is_overridden

from lightning_tickets.__about__ import __version__
from lightning_tickets.bits import pack_bits, unpack_bits
from lightning_tickets.distributed import broadcast_masks, broadcast_tensors_, is_distributed
from lightning_tickets.masks import compute_masks, sparsity_of
from lightning_tickets.report import (
    best_relaxed_ticket,
    format_table,
    plot_summary,
    relative_score,
    write_json_atomic,
)
from lightning_tickets.rewind import RewindPoint, reset_optimizers, restore_snapshot, take_snapshot
from lightning_tickets.schedule import sparsity_schedule
from lightning_tickets.scope import Scope, resolve_scope
from lightning_tickets.sharded import (
    check_shardable,
    gather_masks,
    gather_tensors,
    global_sparsity,
    is_sharded,
    local,
    local_slices,
    local_tensors,
    reshard,
    scatter_masks,
    sharded_masks,
)
from lightning_tickets.structured import (
    Structure,
    check_nm,
    check_structured_sparsity,
    find_structure,
    nm_round_masks,
    nm_schedule,
    parse_granularity,
    structured_masks,
)
from lightning_tickets.ticket import Ticket

__all__ = ["LotteryTicketCallback", "steps_per_round"]

_STATE_VERSION = 1
_SUPPORTED_STRATEGIES = ("SingleDeviceStrategy", "DDPStrategy", "ModelParallelStrategy")
_SHARDED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "XLAStrategy", "XLAFSDPStrategy")
_OWN_FILES = ("round-*.safetensors", "summary.json", "summary.png")


@dataclass
class _State:
    """Everything resume needs (kept small: masks bit-packed, θ0 on the host)."""

    round: int = 0
    round_start_step: int = 0
    round_start_epoch: int = 0
    pending_transition: bool = False  # round finished; next mask / rewind happen at the next batch start
    pending_optimizer_reset: bool = False
    finished: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)
    dense_score: float | None = None
    masks: dict[str, torch.Tensor] | None = None  # live bool masks on the parameters' devices (None = dense)
    snapshot: dict[str, torch.Tensor] | None = None  # rewind point (host copy)


def steps_per_round(trainer: pl.Trainer) -> int | None:
    """Optimizer steps in one pruning round when a :class:`LotteryTicketCallback` is attached, else ``None``.

    Tasks use it to make their LR schedule (warm-up + decay) span one round, since the schedule restarts every round.
    """
    for cb in getattr(trainer, "callbacks", []):
        if isinstance(cb, LotteryTicketCallback):
            return cb.round_steps(trainer)
    return None


class LotteryTicketCallback(Callback):
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
            modules=["Linear"])`` over qualified module names.
        granularity: unstructured ``"global"`` (one threshold over the scope) or ``"layerwise"``; structured
            ``"heads"``, ``"neurons"`` or ``"heads+neurons"`` (whole attention heads / FFN neurons; the schedule's
            sparsity is then the fraction of heads / neurons removed, global, >= 1 per block); or an N:M pattern
            such as ``"2:4"`` (the schedule runs to ``1 - N/M``, ``target_sparsity`` is ignored, and the last round
            applies the pattern). See docs/faster-tickets.md.
        method: ``"magnitude"`` or ``"random"`` (random-pruning baseline with the same schedule).
        rewind_head: rewind parameters outside the scope too (task head, embeddings).
        reset_optimizer: fresh optimizer state and LR schedulers at every round.
        monitor: metric read from ``trainer.callback_metrics`` at each round end (``None``: no scores).
        mode: ``"max"`` or ``"min"``: which direction of ``monitor`` is better.
        tolerance: relaxed winning ticket = ``score >= tolerance * dense`` (``mode="max"``).
        ticket_dir: directory for ``round-RR.safetensors`` tickets and ``summary.json``.
        ticket: path of an existing ticket: train with that mask fixed (no pruning rounds).
        ticket_remap: prefix remapping of the fixed ticket's names (see :meth:`Ticket.apply`).
        ticket_mask: with ``ticket``: train the ticket's own mask (``"ticket"``), a random mask of the same global
            sparsity (``"random"``) or of the same per-tensor sparsities (``"random_matched"``) — the RP baseline.
        ticket_weights: with ``ticket``: the weights the mask is applied to: ``"init"`` (the model's weights at fit
            start), ``"shuffled"`` (θ″, shuffled within each tensor), ``"reinit"`` (random re-initialisation), or
            the path of a checkpoint (θ′: ``.safetensors``, ``.ckpt`` or ``torch.save`` file, keys = parameter
            names).
        overwrite: allow a non-empty ``ticket_dir`` from another run (its ticket files are removed first).
        seed: seed of the random-pruning generator (``method="random"``).
        snapshot_device: where the rewind snapshot lives (``"cpu"`` keeps device memory free).
        plot: write ``summary.png`` (needs matplotlib) at the end of IMP.
        cpu_float_masks: for parameters on the CPU, multiply by a cached copy of the mask in the weights' dtype
            (about 2x faster than a bool multiply on CPU, +4 B/weight of host memory; see docs/performance.md).
            Masks on accelerators are always applied as bool (1 B/weight). The saved state is bool either way.

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
        overwrite: bool = False,
        seed: int = 0,
        snapshot_device: str = "cpu",
        plot: bool = True,
        cpu_float_masks: bool = True,
    ) -> None:
        super().__init__()
        self.fixed_ticket_path = ticket
        self.ticket_remap = dict(ticket_remap) if ticket_remap else None
        if ticket_mask not in ("ticket", "random", "random_matched"):
            raise ValueError(f"ticket_mask={ticket_mask!r} is unknown; use 'ticket', 'random' or 'random_matched'")
        self.ticket_mask = ticket_mask
        self.ticket_weights = ticket_weights
        if ticket is None and (ticket_mask != "ticket" or ticket_weights != "init"):
            raise ValueError("ticket_mask / ticket_weights only apply with ticket=PATH (fixed-ticket training)")
        if ticket is None:
            if (epochs_per_round is None) == (steps_per_round is None):
                raise ValueError(
                    f"give exactly one of epochs_per_round and steps_per_round (got epochs_per_round="
                    f"{epochs_per_round}, steps_per_round={steps_per_round}); e.g. epochs_per_round=1"
                )
            for name, v in (("epochs_per_round", epochs_per_round), ("steps_per_round", steps_per_round)):
                if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                    raise ValueError(f"{name}={v!r} must be a positive integer")
        self._kind, self._nm = parse_granularity(granularity)
        if ticket is None:
            if self._nm is not None:
                self.sparsities = nm_schedule(*self._nm, schedule, rate)
            else:
                self.sparsities = sparsity_schedule(target_sparsity, schedule, rate)
        else:
            self.sparsities = [0.0]
        if method not in ("magnitude", "random"):
            raise ValueError(f"method={method!r} is unknown; use 'magnitude' or 'random'")
        if mode not in ("max", "min"):
            raise ValueError(f"mode={mode!r} is unknown; use 'max' or 'min'")
        if not 0.0 < float(tolerance) <= 1.0:
            raise ValueError(f"tolerance={tolerance!r} is outside (0, 1]; the paper's relaxed ticket uses 0.99")
        self.scope_spec = scope
        self.scope = Scope.parse(scope)  # validates presets and regexes now, not at fit time
        self.target_sparsity = self.sparsities[-1]
        self.schedule = schedule if isinstance(schedule, str) else [float(s) for s in schedule]
        self.rate = float(rate)
        self.epochs_per_round = epochs_per_round
        self.steps_per_round = steps_per_round
        self.rewind = RewindPoint.parse(rewind)
        self.granularity = granularity
        self.method = method
        self.rewind_head = bool(rewind_head)
        self.reset_optimizer = bool(reset_optimizer)
        self.monitor = monitor
        self.mode = mode
        self.tolerance = float(tolerance)
        self.ticket_dir = Path(ticket_dir)
        self.overwrite = bool(overwrite)
        self.seed = int(seed)
        self.snapshot_device = snapshot_device
        self.plot = bool(plot)
        self.cpu_float_masks = bool(cpu_float_masks)
        self._mask_factors: tuple[dict[str, torch.Tensor], list[torch.Tensor]] | None = None
        self._structure: Structure | None = None  # heads / neurons in scope (structured granularities)
        if self.rewind.kind == "epoch" and epochs_per_round is not None and self.rewind.k >= epochs_per_round:
            raise ValueError(
                f"rewind='{self.rewind}' points past round 0 (epochs_per_round={epochs_per_round}); use K < "
                f"{epochs_per_round}"
            )
        if self.rewind.kind == "step" and steps_per_round is not None and self.rewind.k >= steps_per_round:
            raise ValueError(
                f"rewind='{self.rewind}' points past round 0 (steps_per_round={steps_per_round}); use K < "
                f"{steps_per_round}"
            )
        self.state = _State()
        self._params: dict[str, torch.nn.Parameter] = {}
        self._sharded = False  # scope parameters are FSDP2 DTensors: masks / snapshot hold local shards
        self._all_params: dict[str, torch.nn.Parameter] = {}  # every parameter (sharded: the layout of the snapshot)
        self._ticket_dir_pending = False  # ticket_dir check deferred to on_train_start (late-restoring strategies)
        self._loaded: dict[str, Any] | None = None
        self.ticket_report: Any = None  # fixed-ticket mode: lightning_tickets.transfer.TicketMatch of the ticket
        self._boundary = False  # the current round has trained its budget; waiting for its score
        self._last_val_step = -1
        self._last_masked_step = -1
        self._val_configured = False
        self._generator = torch.Generator().manual_seed(self.seed)

    # ------------------------------------------------------------------ public helpers
    @property
    def num_rounds(self) -> int:
        """Rounds including the dense round 0."""
        return len(self.sparsities)

    @property
    def masks(self) -> dict[str, torch.Tensor] | None:
        """Current bool masks by parameter name (``None`` while training dense); local shards when sharded."""
        return self.state.masks

    @property
    def results(self) -> list[dict[str, Any]]:
        """One row per finished round: round, sparsity, score, relative score, ticket file."""
        return list(self.state.rows)

    def round_steps(self, trainer: pl.Trainer) -> int:
        """Optimizer steps in one round (uses the number of training batches in epochs mode)."""
        if self.steps_per_round is not None:
            return self.steps_per_round
        if self.epochs_per_round is None:  # fixed-ticket mode: the whole fit
            return int(trainer.estimated_stepping_batches)
        batches = trainer.num_training_batches
        if batches == float("inf"):  # data not set up yet (configure_optimizers runs first): let Lightning do it
            _ = trainer.estimated_stepping_batches
            batches = trainer.num_training_batches
        if batches == float("inf") or batches is None:
            raise ValueError("epochs_per_round needs a dataloader with a length; use steps_per_round instead")
        accumulate = max(1, int(trainer.accumulate_grad_batches))
        return self.epochs_per_round * max(1, math.ceil(int(batches) / accumulate))

    # ------------------------------------------------------------------ set-up
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        strategy = type(trainer.strategy)
        mro = {c.__name__ for c in strategy.__mro__}
        if mro & set(_SHARDED_STRATEGIES) or not mro & set(_SUPPORTED_STRATEGIES):
            raise RuntimeError(
                f"LotteryTicketCallback does not support the {strategy.__name__} strategy yet (sharded parameters "
                "need per-shard masks); use strategy='ddp' / 'ddp_spawn', a single device, or, to shard the model, "
                "ModelParallelStrategy with FSDP2 fully_shard in configure_model (docs/callback.md, Sharded training)"
            )
        if self.fixed_ticket_path is not None:
            return
        if self.epochs_per_round is not None:
            need = self.num_rounds * self.epochs_per_round
            max_epochs = trainer.max_epochs
            if max_epochs is not None and max_epochs != -1 and max_epochs < need:
                raise ValueError(
                    f"Trainer(max_epochs={max_epochs}) cannot fit {self.num_rounds} rounds x epochs_per_round="
                    f"{self.epochs_per_round}: set max_epochs >= {need} (sparsities {self._fmt_sched()})"
                )
        else:
            need = self.num_rounds * self.steps_per_round
            if trainer.max_steps != -1 and trainer.max_steps < need:
                raise ValueError(
                    f"Trainer(max_steps={trainer.max_steps}) cannot fit {self.num_rounds} rounds x steps_per_round="
                    f"{self.steps_per_round}: set max_steps >= {need} (sparsities {self._fmt_sched()})"
                )
            vci = trainer.val_check_interval
            if (
                isinstance(vci, int)
                and trainer.check_val_every_n_epoch is None
                and self.monitor is not None
                and self.steps_per_round % vci != 0
            ):
                raise ValueError(
                    f"steps_per_round={self.steps_per_round} is not a multiple of val_check_interval={vci}: the "
                    f"score of a round must come from a validation at its end; set val_check_interval="
                    f"{self.steps_per_round}"
                )

    def _fmt_sched(self) -> str:
        return "[" + ", ".join(f"{s:.4g}" for s in self.sparsities) + "]"

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_configured = is_overridden("validation_step", pl_module) and trainer.limit_val_batches != 0
        params = self._all_params = self._named_params(pl_module)
        if self.fixed_ticket_path is not None:
            self._start_fixed(trainer, pl_module)
            return
        self._params = dict(resolve_scope(pl_module, self.scope_spec))
        self._sharded = check_shardable(self._params)
        if self._sharded and self._kind not in ("global", "layerwise"):
            raise ValueError(
                f"granularity={self.granularity!r} is not supported on sharded (FSDP2) parameters yet; use "
                "granularity='global' or 'layerwise', or train with strategy='ddp'"
            )
        self._prepare_granularity(pl_module)
        if self._loaded is not None:
            self._resume(pl_module, params)
            return
        if trainer.strategy.restore_checkpoint_after_setup:
            # ModelParallelStrategy (like FSDP / DeepSpeed) restores callback state only AFTER on_fit_start: whether
            # this fit resumes is known in on_train_start, where the ticket_dir check then runs
            self._ticket_dir_pending = True
        else:
            self._prepare_ticket_dir(trainer)
        # θ0 must be identical on every rank: DDP syncs at wrap time; broadcasting again also covers
        # strategies that skip it. Done before the snapshot, so the snapshot is rank 0's weights.
        # Sharded (DTensor) parameters hold a different shard on every rank: only replicated ones are broadcast.
        broadcast_tensors_({n: p for n, p in params.items() if not is_sharded(p)})
        if self.rewind.kind == "init":
            self.state.snapshot = self._take_snapshot(pl_module)
        self.state.round_start_step = trainer.global_step
        self.state.round_start_epoch = trainer.current_epoch
        n = sum(p.numel() for p in self._params.values())
        rank_zero_info(
            f"[lightning-tickets] IMP over {len(self._params)} tensors / {n:,} weights (scope {self.scope.name!r}"
            + (", sharded: masks and snapshot per local shard" if self._sharded else "")
            + "); "
            f"{self.num_rounds} rounds at sparsities {self._fmt_sched()}, rewind={self.rewind}, method={self.method}"
            + ("" if self.granularity == "global" else f", granularity={self.granularity}")
        )

    def _resume(self, pl_module: pl.LightningModule, params: dict[str, torch.nn.Parameter]) -> None:
        """Apply the state of :meth:`load_state_dict` (kept in ``self._loaded``) to the model and the callback."""
        self._restore(self._loaded, params)
        self._loaded = None
        rank_zero_info(
            f"[lightning-tickets] resumed in round {self.state.round} at sparsity "
            f"{self.sparsities[self.state.round]:.2%}"
        )

    def _resume_late(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Resume for strategies that load callback state after ``on_fit_start`` (``restore_checkpoint_after_setup``):
        the fresh start made there (snapshot of the not-yet-restored weights, fixed ticket) is replaced here."""
        params = self._all_params = self._named_params(pl_module)  # resharded: sanity validation may have run
        self._ticket_dir_pending = False
        self.state, self._mask_factors = _State(), None  # drop the fresh start's snapshot / masks
        if self.fixed_ticket_path is not None:
            self._restore_fixed_ticket(params)
            return
        self._resume(pl_module, params)

    def _prepare_granularity(self, pl_module: pl.LightningModule) -> None:
        """Structured / N:M: find the heads and neurons in scope, refuse impossible schedules before training."""
        if self._kind in ("heads", "neurons", "heads+neurons"):
            structure = find_structure(pl_module).restricted(self._params)
            check_structured_sparsity(structure, self._kind, self.sparsities[-1])
            self._structure = structure
            rank_zero_info(
                f"[lightning-tickets] structured pruning ({self._kind}) over {len(structure.attention)} attention "
                f"blocks / {structure.num_heads} heads and {len(structure.ffn)} FFNs / {structure.num_neurons} "
                "neurons; the schedule's sparsities are fractions of heads / neurons removed"
            )
        elif self._nm is not None:
            check_nm(self._params, *self._nm)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._loaded is not None:  # restored after on_fit_start (see on_fit_start)
            self._resume_late(trainer, pl_module)
        elif self._ticket_dir_pending:
            self._ticket_dir_pending = False
            self._prepare_ticket_dir(trainer)
        if self.fixed_ticket_path is not None or self.state.finished:
            return
        if self.state.round == 0 and self.state.snapshot is None and self.rewind.kind in ("step", "epoch"):
            steps = self.round_steps(trainer)
            nb = trainer.num_training_batches
            k_steps = (
                self.rewind.k
                if self.rewind.kind == "step"
                else (
                    self.rewind.k * max(1, math.ceil(int(nb) / max(1, int(trainer.accumulate_grad_batches))))
                    if isinstance(nb, int)
                    else 0
                )
            )
            if k_steps >= steps:
                raise ValueError(
                    f"rewind='{self.rewind}' points past round 0, which has {steps} optimizer steps; use a smaller K"
                )
        if self.steps_per_round is not None:
            self._check_validation_at_round_ends(trainer)
            return
        every = trainer.check_val_every_n_epoch
        if self._val_configured and self.monitor is not None and every is not None and self.epochs_per_round % every:
            raise ValueError(
                f"check_val_every_n_epoch={every} does not divide epochs_per_round={self.epochs_per_round}: the score "
                "of a round must come from a validation at its end; set check_val_every_n_epoch=1"
            )
        if trainer.max_steps != -1:
            need = self.num_rounds * self.round_steps(trainer)
            if trainer.max_steps < need:
                raise ValueError(
                    f"Trainer(max_steps={trainer.max_steps}) cannot fit {self.num_rounds} rounds of "
                    f"{self.round_steps(trainer)} steps: set max_steps >= {need} or max_steps=-1"
                )

    def _check_validation_at_round_ends(self, trainer: pl.Trainer) -> None:
        """Refuse, before training, a set-up where validation would not run at the end of every round."""
        if not (self._val_configured and self.monitor is not None):
            return
        nb, vcb = trainer.num_training_batches, trainer.val_check_batch
        if not isinstance(nb, int) or nb < 1 or vcb is None or vcb == float("inf"):
            return  # unknown lengths: the check at each round end still applies
        acc, every = max(1, int(trainer.accumulate_grad_batches)), trainer.check_val_every_n_epoch
        for k in range(self.state.round + 1, self.num_rounds + 1):
            t = k * self.steps_per_round * acc - 1  # index of the last batch of round k-1
            epoch, bi = divmod(t, nb)
            if every is None:
                ok = (t + 1) % int(vcb) == 0
            else:
                ok = (epoch + 1) % every == 0 and ((bi + 1) % int(vcb) == 0 or bi == nb - 1)
            if not ok:
                raise ValueError(
                    f"round {k} ends at step {k * self.steps_per_round} (epoch {epoch}, batch {bi}) but no validation "
                    f"is scheduled there, so the round's score ({self.monitor!r}) would be unknown. Set "
                    f"Trainer(val_check_interval={self.steps_per_round * acc}, check_val_every_n_epoch=None)"
                )

    def _prepare_ticket_dir(self, trainer: pl.Trainer) -> None:
        error = None
        if trainer.is_global_zero:
            d = self.ticket_dir
            if d.exists() and not d.is_dir():
                error = f"ticket_dir={str(d)!r} exists and is not a directory"
            elif d.is_dir() and any(d.iterdir()):
                if not self.overwrite:
                    error = (
                        f"ticket_dir={str(d)!r} is not empty (a previous run's tickets?); nothing was overwritten. "
                        "Choose a new ticket_dir, pass overwrite=True to replace its tickets, or resume with "
                        "trainer.fit(..., ckpt_path=...)"
                    )
                else:
                    for pattern in _OWN_FILES:
                        for f in d.glob(pattern):
                            f.unlink()
            if error is None:
                d.mkdir(parents=True, exist_ok=True)
        error = trainer.strategy.broadcast(error)
        if error:
            raise FileExistsError(error)

    def _snapshot_names(self, pl_module: pl.LightningModule) -> list[str]:
        if self.rewind_head:
            return [n for n, _ in pl_module.named_parameters()]
        return list(self._params)

    def _named_params(self, pl_module: pl.LightningModule) -> dict[str, torch.nn.Parameter]:
        """``named_parameters()``, with FSDP2 modules resharded first so that every parameter is its sharded
        DTensor (FSDP2 leaves the root's parameters unsharded after a validation forward)."""
        reshard(pl_module)
        return dict(pl_module.named_parameters())

    def _take_snapshot(self, pl_module: pl.LightningModule) -> dict[str, torch.Tensor]:
        params = self._named_params(pl_module)
        # local shards of sharded parameters (the snapshot is per shard, on the host); plain tensors unchanged
        chosen = {n: params[n] for n in self._snapshot_names(pl_module)}
        return take_snapshot(local_tensors(chosen), self.snapshot_device)

    def _start_fixed(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from lightning_tickets import baselines

        if self._loaded is not None:  # resuming a fixed-ticket run: the checkpoint holds weights and masks
            self._restore_fixed_ticket(self._named_params(pl_module))
            return
        ticket = Ticket.load(self.fixed_ticket_path)
        if self.ticket_mask != "ticket":
            meta = ticket.metadata
            ticket = baselines.random_ticket(ticket, matched=self.ticket_mask == "random_matched", seed=self.seed)
            ticket.metadata.update({k: meta[k] for k in ("round", "score") if k in meta})
        params = self._named_params(pl_module)
        if any(is_sharded(p) for p in params.values()):
            self._start_fixed_sharded(ticket, pl_module, params)
            return
        if self.ticket_weights == "shuffled":
            mapped = ticket.apply(pl_module, strict=True, remap=self.ticket_remap)  # validates and zeroes
            baselines.shuffle_weights(pl_module, list(mapped), seed=self.seed)
        elif self.ticket_weights == "reinit":
            mapped = ticket.apply(pl_module, strict=True, remap=self.ticket_remap)
            baselines.reinit_weights(pl_module, list(mapped), seed=self.seed)
        elif self.ticket_weights != "init":
            report = baselines.load_weights(pl_module, self.ticket_weights, strict=False)
            if not report["matched"]:
                raise ValueError(
                    f"ticket_weights={self.ticket_weights!r} matched no parameter of {type(pl_module).__name__} "
                    f"(missing e.g. {report['missing'][:5]})"
                )
            rank_zero_info(
                f"[lightning-tickets] loaded {len(report['matched'])} tensors from {self.ticket_weights} "
                f"({len(report['missing'])} model tensors not in the file, {len(report['shape_mismatch'])} shape "
                "mismatches kept their current values)"
            )
        broadcast_tensors_(params)  # every rank starts from rank 0's (transformed) weights
        masks = ticket.apply(pl_module, strict=True, remap=self.ticket_remap)
        masks = broadcast_masks(masks) if is_distributed() else masks
        from lightning_tickets.transfer import match_ticket

        self.ticket_report = match_ticket(ticket, pl_module, self.ticket_remap, scope=self.scope_spec)
        rank_zero_info(f"[lightning-tickets] {self.ticket_report.format()}")
        self._params = {n: params[n] for n in masks}
        self._use_fixed_masks(masks)

    def _start_fixed_sharded(
        self, ticket: Ticket, pl_module: pl.LightningModule, params: dict[str, torch.nn.Parameter]
    ) -> None:
        """Fixed ticket on FSDP2 parameters: rank 0's full masks, cut into each rank's local shards."""
        if self.ticket_weights != "init":
            raise ValueError(
                f"ticket_weights={self.ticket_weights!r} is not supported on sharded (FSDP2) parameters yet; use "
                "ticket_weights='init' (transform the weights before fully_shard, in configure_model), or train "
                "with strategy='ddp'"
            )
        full = ticket.masks_for(pl_module, strict=True, remap=self.ticket_remap)  # validates names and shapes
        self._sharded = check_shardable({n: params[n] for n in full})
        broadcast_tensors_({n: p for n, p in params.items() if not is_sharded(p)})
        full = broadcast_masks(full) if is_distributed() else full  # every rank cuts its shard of rank 0's ticket
        masks = scatter_masks(full, params)
        from lightning_tickets.transfer import match_ticket

        self.ticket_report = match_ticket(ticket, pl_module, self.ticket_remap, scope=self.scope_spec)
        rank_zero_info(f"[lightning-tickets] {self.ticket_report.format()}")
        self._params = {n: params[n] for n in masks}
        self._use_fixed_masks(masks)

    def _use_fixed_masks(self, masks: dict[str, torch.Tensor]) -> None:
        self.state.masks = masks
        self._apply_masks()
        self.state.round = 0
        self.sparsities = [self._sparsity(masks)]
        self.target_sparsity = self.sparsities[0]
        rank_zero_info(
            f"[lightning-tickets] training with the fixed ticket {self.fixed_ticket_path} "
            f"({len(masks)} tensors, sparsity {self.sparsities[0]:.2%})"
        )

    # ------------------------------------------------------------------ training hooks
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        st = self.state
        if self._boundary and not st.pending_transition and not st.finished:
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
        st = self.state
        if st.masks is not None and trainer.global_step != self._last_masked_step:
            self._apply_masks()
            self._last_masked_step = trainer.global_step
        pl_module.log("tickets/round", float(st.round), prog_bar=True, on_step=True, on_epoch=False)
        pl_module.log("tickets/sparsity", float(self.sparsities[st.round]), prog_bar=True, on_step=True, on_epoch=False)
        if self.fixed_ticket_path is not None or st.finished:
            return
        done = trainer.global_step - st.round_start_step
        if self.rewind.kind == "step" and st.round == 0 and st.snapshot is None and done >= self.rewind.k:
            st.snapshot = self._take_snapshot(pl_module)
        if self.steps_per_round is not None and done >= self.steps_per_round and not self._boundary:
            self._boundary = True
            if not (self._val_configured and self.monitor is not None):
                self._finish_round(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._last_val_step = trainer.global_step
        if self._boundary and self.steps_per_round is not None and not self.state.pending_transition:
            self._finish_round(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        st = self.state
        if self.fixed_ticket_path is not None or st.finished:
            return
        done = trainer.current_epoch + 1 - st.round_start_epoch
        if self.rewind.kind == "epoch" and st.round == 0 and st.snapshot is None and done >= self.rewind.k:
            st.snapshot = self._take_snapshot(pl_module)
        if self.epochs_per_round is None:
            return
        if done >= self.epochs_per_round:
            self._boundary = True
            if self._val_configured and self.monitor is not None and self._last_val_step != trainer.global_step:
                raise RuntimeError(
                    f"round {st.round} ended after epoch {trainer.current_epoch} but validation did not run at its "
                    f"end, so its score ({self.monitor!r}) is unknown; set check_val_every_n_epoch to a divisor of "
                    f"epochs_per_round={self.epochs_per_round}"
                )
            self._finish_round(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mask_factors = None  # free the CPU float copies
        st = self.state
        if self.fixed_ticket_path is not None:
            score = self._read_score(trainer, required=False)
            st.rows = [
                {
                    "round": 0,
                    "sparsity": self._sparsity(st.masks),
                    "score": score,
                    "relative": None,
                    "ticket": str(self.fixed_ticket_path),
                    "match": None if self.ticket_report is None else self.ticket_report.to_dict(),
                }
            ]
            self._write_summary(trainer)
            return
        if not st.finished:
            rank_zero_warn(
                f"training stopped before IMP finished: {len(st.rows)} of {self.num_rounds} rounds have a score "
                f"(sparsities {self._fmt_sched()}). Resume from a checkpoint or raise max_epochs/max_steps."
            )
        self._write_summary(trainer)
        if trainer.is_global_zero:
            table = format_table(st.rows, self.monitor, st.dense_score, self.tolerance, self.mode)
            best = best_relaxed_ticket(st.rows, st.dense_score, self.tolerance, self.mode)
            lines = ["", "[lightning-tickets] rounds:", table]
            if st.rows and self.monitor is not None and st.dense_score is not None:
                lines.append(
                    f"relaxed winning ticket (>= {self.tolerance:.0%} of dense): "
                    + (
                        f"round {best['round']} at {best['sparsity']:.2%} -> {self.ticket_dir / best['ticket']}"
                        if best
                        else "none"
                    )
                )
            lines.append(f"summary: {self.ticket_dir / 'summary.json'}")
            if self.plot and st.rows and self.monitor is not None:
                try:
                    png = plot_summary([self._summary()], self.ticket_dir / "summary.png")
                    lines.append(f"plot: {png}")
                except ImportError as err:
                    lines.append(f"plot skipped: {err}")
            print("\n".join(lines), flush=True)

    # ------------------------------------------------------------------ round logic
    def _read_score(self, trainer: pl.Trainer, required: bool = True) -> float | None:
        if self.monitor is None:
            return None
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            if not required:
                return None
            logged = sorted(k for k in metrics if not k.startswith("tickets/"))
            raise KeyError(
                f"monitor={self.monitor!r} was never logged; logged metrics: {logged or 'none'}. Pass one of them as "
                "monitor (or monitor=None to record no scores)"
            )
        score = float(metrics[self.monitor])
        return float(trainer.strategy.broadcast(score))  # rank 0's value decides

    def _finish_round(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        st = self.state
        score = self._read_score(trainer)
        if st.round == 0:
            st.dense_score = score
        masks = (
            st.masks
            if st.masks is not None
            else {n: torch.ones_like(local(p), dtype=torch.bool) for n, p in self._params.items()}
        )
        name = f"round-{st.round:02d}.safetensors"
        row = {
            "round": st.round,
            "sparsity": self._sparsity(masks),
            "score": score,
            "relative": relative_score(score, st.dense_score),
            "ticket": name,
            "step": trainer.global_step,
            "epoch": trainer.current_epoch,
        }
        st.rows.append(row)
        if self._sharded:  # full-model masks on rank 0 (collective: every rank takes part)
            masks = gather_masks(masks, self._params, dst=0)
        if trainer.is_global_zero:
            meta = {
                "round": st.round,
                "score": score,
                "dense_score": st.dense_score,
                "monitor": self.monitor,
                "mode": self.mode,
                "target_sparsity": self.target_sparsity,
                "schedule": self.schedule,
                "rate": self.rate,
                "sparsities": self.sparsities,
                "rewind": str(self.rewind),
                "method": self.method,
                "granularity": self.granularity,
                "scope": self.scope.to_dict(),
                "model_class": f"{type(pl_module).__module__}.{type(pl_module).__qualname__}",
                "global_step": trainer.global_step,
            }
            Ticket(masks, meta).save(self.ticket_dir / name)
        self._boundary = False
        if st.round == self.num_rounds - 1:
            st.finished = True
            trainer.should_stop = True
        else:
            st.pending_transition = True
        self._write_summary(trainer)
        rel = row["relative"]
        rank_zero_info(
            f"[lightning-tickets] round {st.round} done: sparsity {row['sparsity']:.2%}"
            + ("" if score is None else f", {self.monitor}={score:.4f}")
            + ("" if rel is None else f" ({rel:.3f} of dense)")
        )

    @torch.no_grad()
    def _transition(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the next round: new mask from the trained weights, rewind, zero pruned weights, schedule a reset."""
        st = self.state
        nxt = st.round + 1
        target = self.sparsities[nxt]
        if self._sharded:
            reshard(pl_module)  # the next forward must all-gather the rewound, masked shards
        new = self._compute_masks(st.masks, target, final=nxt == self.num_rounds - 1)
        new = broadcast_masks(new) if is_distributed() and not self._sharded else new
        if self.rewind.kind != "none":
            if st.snapshot is None:
                raise RuntimeError(f"no rewind snapshot was taken for rewind='{self.rewind}' (round 0 too short?)")
            params = self._named_params(pl_module)
            restore_snapshot(local_tensors({n: params[n] for n in st.snapshot}), st.snapshot)
        st.masks = new
        self._apply_masks()
        st.round = nxt
        st.round_start_step = trainer.global_step
        st.round_start_epoch = trainer.current_epoch
        st.pending_transition = False
        st.pending_optimizer_reset = self.reset_optimizer
        self._last_masked_step = trainer.global_step

    def _compute_masks(
        self, masks: dict[str, torch.Tensor] | None, target: float, final: bool
    ) -> dict[str, torch.Tensor]:
        """The next round's masks: unstructured (:mod:`~lightning_tickets.masks`), heads / neurons or N:M
        (:mod:`~lightning_tickets.structured`)."""
        generator = self._generator if self.method == "random" else None
        if self._sharded:  # local shards; histograms summed over ranks (lightning_tickets.sharded)
            return sharded_masks(self._params, masks, target, self.method, self.granularity, self._generator)
        if self._structure is not None:
            return structured_masks(self._params, self._structure, masks, target, self._kind, generator)
        if self._nm is not None:
            return nm_round_masks(self._params, masks, target, *self._nm, final=final, generator=generator)
        return compute_masks(self._params, masks, target, self.method, self.granularity, self._generator)

    def _sparsity(self, masks: Mapping[str, torch.Tensor]) -> float:
        """Fraction pruned over the whole scope (summed over ranks when the masks are local shards)."""
        return global_sparsity(masks) if self._sharded else sparsity_of(masks)

    @torch.no_grad()
    def _apply_masks(self) -> None:
        masks = self.state.masks
        if not masks:
            return
        params = [local(self._params[n]) if self._sharded else self._params[n] for n in masks]
        cache = self._mask_factors
        if cache is None or cache[0] is not masks:  # state.masks is replaced at every round, never mutated
            fast = self.cpu_float_masks
            factors = [m.to(p.dtype) if fast and p.device.type == "cpu" else m for p, m in zip(params, masks.values())]
            cache = self._mask_factors = (masks, factors)
        torch._foreach_mul_(params, cache[1])

    # ------------------------------------------------------------------ persistence
    def _summary(self) -> dict[str, Any]:
        st = self.state
        return {
            "library_version": __version__,
            "monitor": self.monitor,
            "mode": self.mode,
            "tolerance": self.tolerance,
            "method": self.method,
            "granularity": self.granularity,
            "rewind": str(self.rewind),
            "schedule": self.schedule,
            "rate": self.rate,
            "sparsities": self.sparsities,
            "target_sparsity": self.target_sparsity,
            "dense_score": st.dense_score,
            "finished": st.finished,
            "rounds": st.rows,
            "best_relaxed_ticket": best_relaxed_ticket(st.rows, st.dense_score, self.tolerance, self.mode),
        }

    def _write_summary(self, trainer: pl.Trainer) -> None:
        if trainer.is_global_zero:
            self.ticket_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.ticket_dir / "summary.json", self._summary())

    def _config(self) -> dict[str, Any]:
        if self.fixed_ticket_path is not None:
            return {
                "ticket": str(self.fixed_ticket_path),
                "ticket_mask": self.ticket_mask,
                "ticket_weights": self.ticket_weights,
            }
        return {
            "sparsities": self.sparsities,
            "rewind": str(self.rewind),
            "method": self.method,
            "granularity": self.granularity,
            "epochs_per_round": self.epochs_per_round,
            "steps_per_round": self.steps_per_round,
            "rewind_head": self.rewind_head,
        }

    def state_dict(self) -> dict[str, Any]:
        st = self.state
        full_masks, snapshot = st.masks, st.snapshot
        if self._sharded:  # full tensors, as an unsharded run writes them (collective; kept on rank 0)
            full_masks = None if full_masks is None else gather_masks(full_masks, self._params, dst=0)
            snapshot = None if snapshot is None else gather_tensors(snapshot, self._all_params, dst=0)
        masks = None
        if full_masks is not None:
            masks = {n: {"shape": list(m.shape), "bits": pack_bits(m)} for n, m in full_masks.items()}
        return {
            "version": _STATE_VERSION,
            "config": self._config(),
            "round": st.round,
            "round_start_step": st.round_start_step,
            "round_start_epoch": st.round_start_epoch,
            "pending_transition": st.pending_transition,
            "pending_optimizer_reset": st.pending_optimizer_reset,
            "boundary": self._boundary,
            "finished": st.finished,
            "rows": [dict(r) for r in st.rows],
            "dense_score": st.dense_score,
            "scope_names": list(self._params),
            "masks": masks,
            "snapshot": None if snapshot is None else {n: t.cpu() for n, t in snapshot.items()},
            "generator": self._generator.get_state(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("version", 0) > _STATE_VERSION:
            raise ValueError(
                f"checkpoint holds LotteryTicketCallback state version {state_dict.get('version')}, newer than this "
                f"lightning-tickets {__version__} reads ({_STATE_VERSION}); upgrade lightning-tickets"
            )
        if state_dict.get("config") != self._config():
            raise ValueError(
                f"the checkpoint was written by a LotteryTicketCallback configured as {state_dict.get('config')}, "
                f"but this one is configured as {self._config()}; resume with the same settings"
            )
        self._loaded = state_dict

    def _restore_fixed_ticket(self, params: Mapping[str, torch.nn.Parameter]) -> None:
        """Resume a fixed-ticket run from the checkpointed state in ``self._loaded`` (weights and masks)."""
        self._params = {n: params[n] for n in self._loaded["scope_names"]}
        self._sharded = check_shardable(self._params)
        self._restore(self._loaded, params)
        self._loaded = None
        self.sparsities = [self._sparsity(self.state.masks)]
        self.target_sparsity = self.sparsities[0]

    def _restore(self, sd: Mapping[str, Any], params: Mapping[str, torch.nn.Parameter]) -> None:
        names = list(sd["scope_names"])
        if names != list(self._params):
            only_ckpt = [n for n in names if n not in self._params][:5]
            only_model = [n for n in self._params if n not in names][:5]
            raise ValueError(
                f"the checkpoint's pruning scope differs from this model's: only in checkpoint {only_ckpt}, only in "
                f"model {only_model}"
            )
        st = self.state
        st.round = int(sd["round"])
        st.round_start_step = int(sd["round_start_step"])
        st.round_start_epoch = int(sd["round_start_epoch"])
        st.pending_transition = bool(sd["pending_transition"])
        st.pending_optimizer_reset = bool(sd["pending_optimizer_reset"])
        st.finished = bool(sd["finished"])
        st.rows = [dict(r) for r in sd["rows"]]
        st.dense_score = sd["dense_score"]
        self._boundary = bool(sd.get("boundary", False))
        if sd["masks"] is not None:
            full = {n: unpack_bits(v["bits"], v["shape"]) for n, v in sd["masks"].items()}
            if self._sharded:  # the checkpoint holds full masks: keep this rank's shards
                st.masks = scatter_masks(full, self._params)
            else:
                st.masks = {n: m.to(self._params[n].device) for n, m in full.items()}
            self._apply_masks()
        if sd["snapshot"] is not None:
            if self._sharded:
                st.snapshot = local_slices(sd["snapshot"], params, device=self.snapshot_device)
            else:
                st.snapshot = {n: t.to(self.snapshot_device) for n, t in sd["snapshot"].items()}
        if sd.get("generator") is not None:
            self._generator.set_state(sd["generator"])
