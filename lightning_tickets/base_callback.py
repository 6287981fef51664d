"""What every ticket callback shares: settings, the run state, masks re-applied after each step, persistence.

:class:`TicketCallbackBase` is the common base of :class:`~lightning_tickets.callback.LotteryTicketCallback` (IMP)
and :class:`~lightning_tickets.fixed_ticket.FixedTicketCallback` (training one given ticket: the baselines). It owns
no maths, no I/O and no strategy branching: masks go through a :class:`~lightning_tickets.layout.MaskStore` chosen
when training starts, files through a :class:`~lightning_tickets.ticket_dir.TicketDir`, and the run state is one
:class:`~lightning_tickets.state.RunState` that ``state_dict`` saves whole.

Example:
    >>> from lightning_tickets import LotteryTicketCallback
    >>> isinstance(LotteryTicketCallback(0.5, epochs_per_round=1), TicketCallbackBase)
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.model_helpers import is_overridden

from lightning_tickets.layout import MaskStore
from lightning_tickets.schedule import RoundPlan
from lightning_tickets.scope import Scope
from lightning_tickets.state import RunState, state_from_dict, state_to_dict
from lightning_tickets.ticket_dir import TicketDir, build_summary
from lightning_tickets.trainer_checks import LEGACY_STATE_KEY, state_key_for

__all__ = ["TicketCallbackBase"]

_SUPPORTED_STRATEGIES = ("SingleDeviceStrategy", "DDPStrategy", "ModelParallelStrategy")
_SHARDED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "XLAStrategy", "XLAFSDPStrategy")


@dataclass
class _Runtime:
    """Derived objects of the current fit, rebuilt at every train start (never checkpointed)."""

    store: MaskStore
    all_params: dict[str, torch.nn.Parameter]
    validates: bool  # the module validates, so a monitored score comes from a validation at the round end


def _check_snapshot_device(device: str) -> str:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"snapshot_device={device!r} is not a torch device; use 'cpu' (default) or 'cuda'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"snapshot_device={device!r} but CUDA is not available here; use snapshot_device='cpu'")
    return device


class TicketCallbackBase(Callback):
    """Common base of the ticket callbacks (see the module docstring); not used directly."""

    round_plan: RoundPlan
    sparsities: list[float]
    target_sparsity: float

    def __init__(
        self,
        *,
        scope: str | dict[str, Any],
        monitor: str | None,
        parameter_names: list[str] | None = None,
        mode: str,
        tolerance: float,
        ticket_dir: str,
        overwrite: bool,
        seed: int,
        snapshot_device: str,
        plot: bool,
        cpu_float_masks: bool,
    ) -> None:
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode={mode!r} is unknown; use 'max' or 'min'")
        if not 0.0 < float(tolerance) <= 1.0:
            raise ValueError(f"tolerance={tolerance!r} is outside (0, 1]; the paper's relaxed ticket uses 0.99")
        if str(ticket_dir).strip() in ("", "."):
            raise ValueError(
                f"ticket_dir={ticket_dir!r} would write into the working directory; give a dedicated directory, "
                "e.g. ticket_dir='runs/my_run/tickets'"
            )
        self.scope_spec = scope
        self.scope = Scope.parse(scope, parameter_names)  # validates presets and regexes now, not at fit time
        self.monitor = monitor
        self.mode = mode
        self.tolerance = float(tolerance)
        self.ticket_dir = TicketDir(ticket_dir, overwrite).path
        self.overwrite = bool(overwrite)
        self.seed = int(seed)
        self.snapshot_device = _check_snapshot_device(snapshot_device)
        self.plot = bool(plot)
        self.cpu_float_masks = bool(cpu_float_masks)
        self.state = RunState(generator=torch.Generator().manual_seed(self.seed))
        self._run: _Runtime | None = None
        self._loaded: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        """``"LotteryTicketCallback"`` with the default scope (both modes: checkpoints of earlier versions resume),
        else followed by the scope, so that callbacks with disjoint scopes can share a Trainer."""
        return state_key_for(self.scope)

    @property
    def _legacy_state_key(self) -> str:  # type: ignore[override]
        return LEGACY_STATE_KEY  # Lightning's fallback: a checkpoint of an earlier version resumes any one scope

    # ------------------------------------------------------------------ public helpers
    @property
    def num_rounds(self) -> int:
        """Rounds including the dense round 0."""
        return self.round_plan.num_rounds

    @property
    def masks(self) -> dict[str, torch.Tensor] | None:
        """Current bool masks by parameter name (``None`` while training dense); local shards when sharded."""
        return self.state.masks

    @property
    def results(self) -> list[dict[str, Any]]:
        """One row per finished round: round, sparsity, score, relative score, ticket file."""
        return list(self.state.rows)

    @property
    def _params(self) -> dict[str, torch.nn.Parameter]:
        """The parameters in scope during a fit (empty before training starts)."""
        return {} if self._run is None else self._run.store.params

    def round_steps(self, trainer: pl.Trainer) -> int:
        """Optimizer steps in one round (uses the number of training batches in epochs mode)."""
        return self.round_plan.steps(trainer)

    def _ticket_dir(self) -> TicketDir:
        return TicketDir(self.ticket_dir, self.overwrite)

    def _settings(self) -> dict[str, Any]:
        """The settings a resume must not change (compared key by key; see :meth:`load_state_dict`)."""
        return {"monitor": self.monitor, "mode": self.mode, "tolerance": self.tolerance}

    def _run_info(self) -> dict[str, Any]:
        """The run's settings as ``summary.json`` and ticket metadata record them."""
        return {"monitor": self.monitor, "mode": self.mode, "tolerance": self.tolerance,
                "sparsities": self.sparsities, "target_sparsity": self.target_sparsity}  # fmt: skip

    def _ticket_metadata(self, trainer: pl.Trainer, pl_module: pl.LightningModule, score: float | None) -> dict:
        st = self.state
        return {"round": st.round, "score": score, "dense_score": st.dense_score, **self._run_info(),
                "scope": self.scope.to_dict(), "global_step": trainer.global_step, "run_id": st.run_id,
                "model_class": f"{type(pl_module).__module__}.{type(pl_module).__qualname__}"}  # fmt: skip

    def _summary(self) -> dict[str, Any]:
        """``summary.json``'s content (see :func:`~lightning_tickets.ticket_dir.build_summary`)."""
        return build_summary(self._run_info(), self.state)

    # ------------------------------------------------------------------ hooks shared by both modes
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        strategy = type(trainer.strategy)
        mro = {c.__name__ for c in strategy.__mro__}
        if mro & set(_SHARDED_STRATEGIES) or not mro & set(_SUPPORTED_STRATEGIES):
            raise RuntimeError(
                f"{type(self).__name__} does not support the {strategy.__name__} strategy yet (sharded parameters "
                "need per-shard masks); use strategy='ddp' / 'ddp_spawn', a single device, or, to shard the model, "
                "ModelParallelStrategy with FSDP2 fully_shard in configure_model (docs/callback.md, Sharded training)"
            )

    def _validates(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        return is_overridden("validation_step", pl_module) and trainer.limit_val_batches != 0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        st = self.state
        if self._run is not None and st.masks is not None and trainer.global_step != st.last_masked_step:
            self._run.store.apply(st.masks)  # the optimizer step moved pruned weights: zero them again
            st.last_masked_step = trainer.global_step
        pl_module.log("tickets/round", float(st.round), prog_bar=True, on_step=True, on_epoch=False)
        sparsity = self.round_plan.sparsities[min(st.round, self.num_rounds - 1)]
        pl_module.log("tickets/sparsity", float(sparsity), prog_bar=True, on_step=True, on_epoch=False)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        if self._run is not None and not self.state.finished:
            self._run.store.pruner.observe(self._run.store.params)  # gradient-aware scores (score="taylor")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self.state.last_val_step = trainer.global_step
            self.state.last_val_score = self._read_score(trainer, required=False)

    def _round_score(self, trainer: pl.Trainer) -> float | None:
        """The score of the round ending now: the validation that just ran at this step (kept in the run state, so
        a checkpoint saved at its end resumes with it), else the current ``callback_metrics``."""
        st = self.state
        if self.monitor is not None and st.last_val_step == trainer.global_step and st.last_val_score is not None:
            return st.last_val_score
        return self._read_score(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._run is not None:
            self._run.store.release()  # free the CPU float copies of the masks

    # ------------------------------------------------------------------ scores
    def _read_score(self, trainer: pl.Trainer, required: bool = True) -> float | None:
        """The monitored metric, rank 0's value; a NaN / infinite value is returned as NaN."""
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
        score = float(trainer.strategy.broadcast(float(metrics[self.monitor])))
        return score if math.isfinite(score) else float("nan")

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        if self._run is None:
            return state_to_dict(self.state)
        store, params = self._run.store, self._run.all_params
        return state_to_dict(self.state, store.full_masks, lambda s: store.full_snapshot(s, params))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old = state_dict.get("settings") or state_dict.get("config") or {}  # "config": version 1 checkpoints
        new = self._settings()
        changed = {k: (old[k], new[k]) for k in old if k in new and old[k] != new[k]}
        if changed:
            what = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in changed.items())
            raise ValueError(
                f"the checkpoint was written by a {type(self).__name__} configured as it is not now ({what}). A "
                "resumed run must keep them (its summary would mix rounds of different settings): resume with the "
                "same settings (the checkpoint's values), or start a new run"
            )
        self._loaded = state_dict

    def _restore(self, pl_module: pl.LightningModule) -> None:
        """Replace the fresh state by the checkpoint's (kept by :meth:`load_state_dict`); apply its masks."""
        run, sd = self._run, self._loaded
        assert run is not None and sd is not None
        names = list(sd.get("scope_names") or [])
        if names != list(run.store.params):
            only_ckpt = [n for n in names if n not in run.store.params][:5]
            only_model = [n for n in run.store.params if n not in names][:5]
            raise ValueError(
                f"the checkpoint's pruning scope differs from this model's: only in checkpoint {only_ckpt}, only in "
                f"model {only_model}"
            )
        self.state = state_from_dict(
            sd,
            run.store.local_masks,
            lambda s: run.store.local_snapshot(s, run.all_params, self.snapshot_device),
        )
        self.state.settings = self._settings()
        run.store.pruner.generator = self.state.generator
        run.store.pruner.sums = self.state.score_sums
        run.store.apply(self.state.masks)
        self._loaded = None
