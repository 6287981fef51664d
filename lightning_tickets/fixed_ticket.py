"""``FixedTicketCallback``: train with one given ticket's mask fixed — the paper's baselines and ticket transfer.

The mask comes from a ticket file (or a random mask of the same sparsity: random pruning, RP) and is applied to the
weights at fit start, to those weights shuffled within each tensor (θ″), re-initialised, or loaded from a checkpoint
(θ′). One round, the whole fit; ``summary.json`` gets one row. ``LotteryTicketCallback(ticket=PATH, ...)`` builds
this callback too.

Example:
    >>> cb = FixedTicketCallback(ticket="tickets/round-03.safetensors", ticket_mask="random_matched")
    >>> cb.ticket_mask
    'random_matched'
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional, Union

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info

from lightning_tickets import baselines
from lightning_tickets.base_callback import TicketCallbackBase, _Runtime
from lightning_tickets.layout import mask_store_for, named_parameters
from lightning_tickets.pruner import Pruner
from lightning_tickets.schedule import RoundPlan
from lightning_tickets.ticket import Ticket

__all__ = ["FixedTicketCallback", "FixedTicketDispatch"]


class _FixedTicketDispatch(type):
    """``LotteryTicketCallback(ticket=PATH, ...)`` builds a :class:`FixedTicketCallback` (done in the metaclass of
    :class:`~lightning_tickets.LotteryTicketCallback`, so its ``__init__`` signature stays what LightningCLI /
    jsonargparse read)."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls.__name__ == "LotteryTicketCallback" and kwargs.get("ticket") is not None:
            return FixedTicketCallback(*args, **kwargs)
        return super().__call__(*args, **kwargs)


class FixedTicketCallback(TicketCallbackBase):
    """Train with a fixed ticket (no pruning rounds): one round, the whole fit.

    Args:
        ticket: path of an existing ticket: train with that mask fixed (no pruning rounds).
        ticket_remap: prefix remapping of the fixed ticket's names (see :meth:`Ticket.apply`).
        ticket_mask: with ``ticket``: train the ticket's own mask (``"ticket"``), a random mask of the same global
            sparsity (``"random"``) or of the same per-tensor sparsities (``"random_matched"``) — the RP baseline.
        ticket_weights: with ``ticket``: the weights the mask is applied to: ``"init"`` (the model's weights at fit
            start), ``"shuffled"`` (θ″, shuffled within each tensor), ``"reinit"`` (random re-initialisation), or
            the path of a checkpoint (θ′: ``.safetensors``, ``.ckpt`` or ``torch.save`` file, keys = parameter
            names), loaded with ``torch.load(weights_only=True)``.
        trust_checkpoint: with ``ticket_weights=PATH``: allow a ``.ckpt`` / ``.pt`` that needs a full unpickle
            (which can run code from the file); only for files you trust.
        scope, monitor, mode, tolerance, ticket_dir, overwrite, seed, snapshot_device, plot, cpu_float_masks: as
            :class:`~lightning_tickets.callback.LotteryTicketCallback` (``scope`` only feeds the ticket-match report;
            ``ticket_dir`` receives ``summary.json``; ``seed`` seeds random masks and shuffling). The IMP arguments
            are accepted and ignored, so one yaml can switch modes.

    Example:
        >>> cb = FixedTicketCallback("tickets/round-02.safetensors", ticket_weights="shuffled")
        >>> cb.sparsities  # the ticket's sparsity once training starts
        [0.0]
    """

    def __init__(
        self,
        ticket: str,
        ticket_remap: Optional[dict[str, str]] = None,
        ticket_mask: Literal["ticket", "random", "random_matched"] = "ticket",
        ticket_weights: str = "init",
        trust_checkpoint: bool = False,
        scope: Union[str, dict[str, Any]] = "encoder",
        monitor: Optional[str] = "val/acc",
        mode: Literal["max", "min"] = "max",
        tolerance: float = 0.99,
        ticket_dir: str = "tickets",
        overwrite: bool = False,
        seed: int = 0,
        snapshot_device: str = "cpu",
        plot: bool = True,
        cpu_float_masks: bool = True,
        **imp_arguments: Any,
    ) -> None:
        if ticket_mask not in ("ticket", "random", "random_matched"):
            raise ValueError(f"ticket_mask={ticket_mask!r} is unknown; use 'ticket', 'random' or 'random_matched'")
        super().__init__(
            scope=scope, monitor=monitor, mode=mode, tolerance=tolerance, ticket_dir=ticket_dir, overwrite=overwrite,
            seed=seed, snapshot_device=snapshot_device, plot=plot, cpu_float_masks=cpu_float_masks,
        )  # fmt: skip
        self.fixed_ticket_path = ticket
        self.ticket_remap = dict(ticket_remap) if ticket_remap else None
        self.ticket_mask = ticket_mask
        self.ticket_weights = ticket_weights
        self.trust_checkpoint = bool(trust_checkpoint)
        self.round_plan = RoundPlan([0.0])  # one round: the whole fit
        self.sparsities = [0.0]  # becomes the ticket's sparsity when training starts
        self.target_sparsity = 0.0
        self.ticket_report: Any = None  # lightning_tickets.transfer.TicketMatch of the ticket and the model

    def _settings(self) -> dict[str, Any]:
        return {
            "ticket": str(self.fixed_ticket_path),
            "ticket_mask": self.ticket_mask,
            "ticket_weights": self.ticket_weights,
            **super()._settings(),
        }

    def _run_info(self) -> dict[str, Any]:
        return {**super()._run_info(), "ticket": str(self.fixed_ticket_path), "ticket_mask": self.ticket_mask,
                "ticket_weights": self.ticket_weights}  # fmt: skip

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        params = named_parameters(pl_module)
        if self._loaded is not None:  # resuming: the checkpoint holds the weights and the masks
            names = list(self._loaded.get("scope_names") or [])
            self._start({n: params[n] for n in names}, params, trainer, pl_module)
            self._restore(pl_module)
            self._set_sparsity(self.state.masks)
            return
        ticket = Ticket.load(self.fixed_ticket_path)
        if self.ticket_mask != "ticket":
            meta = ticket.metadata
            ticket = baselines.random_ticket(ticket, matched=self.ticket_mask == "random_matched", seed=self.seed)
            ticket.metadata.update({k: meta[k] for k in ("round", "score") if k in meta})
        full = ticket.masks_for(pl_module, strict=True, remap=self.ticket_remap)  # validates names and shapes
        self._start({n: params[n] for n in full}, params, trainer, pl_module)
        store = self._run.store
        if self.ticket_weights in ("shuffled", "reinit"):
            store.apply(store.local_masks(full))  # zero the pruned weights first (they are shuffled too)
        self._transform_weights(pl_module, list(full))
        store.broadcast_weights(params)  # every rank starts from rank 0's (transformed) weights
        masks = store.local_masks(store.broadcast_full(full))
        from lightning_tickets.transfer import match_ticket

        self.ticket_report = match_ticket(ticket, pl_module, self.ticket_remap, scope=self.scope_spec)
        rank_zero_info(f"[lightning-tickets] {self.ticket_report.format()}")
        st = self.state
        st.masks, st.settings, st.scope_names = masks, self._settings(), list(masks)
        store.apply(masks)
        self._set_sparsity(masks)
        rank_zero_info(
            f"[lightning-tickets] training with the fixed ticket {self.fixed_ticket_path} "
            f"({len(masks)} tensors, sparsity {self.sparsities[0]:.2%})"
        )

    def _start(self, scope: dict, params: dict, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        store = mask_store_for(scope, Pruner("global", generator=self.state.generator), self.cpu_float_masks)
        self._run = _Runtime(store, params, self._validates(trainer, pl_module))

    def _transform_weights(self, pl_module: pl.LightningModule, names: list[str]) -> None:
        """θ″ / re-init / θ′: change the weights the mask is applied to (before the broadcast from rank 0)."""
        if self.ticket_weights == "init":
            return
        if self._run.store.sharded:
            raise ValueError(
                f"ticket_weights={self.ticket_weights!r} is not supported on sharded (FSDP2) parameters yet; use "
                "ticket_weights='init' (transform the weights before fully_shard, in configure_model), or train "
                "with strategy='ddp'"
            )
        if self.ticket_weights == "shuffled":
            baselines.shuffle_weights(pl_module, names, seed=self.seed)
        elif self.ticket_weights == "reinit":
            baselines.reinit_weights(pl_module, names, seed=self.seed)
        else:
            report = baselines.load_weights(
                pl_module, self.ticket_weights, strict=False, trust_checkpoint=self.trust_checkpoint
            )
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

    def _set_sparsity(self, masks: dict[str, torch.Tensor]) -> None:
        self.sparsities = [self._run.store.sparsity(masks)]
        self.target_sparsity = self.sparsities[0]

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        st = self.state
        score = self._read_score(trainer, required=False)
        st.rows = [
            {
                "round": 0,
                "sparsity": self.sparsities[0],
                "score": None if score is None or math.isnan(score) else score,  # NaN: a failed run, null
                "relative": None,
                "ticket": str(self.fixed_ticket_path),
                "match": None if self.ticket_report is None else self.ticket_report.to_dict(),
            }
        ]
        st.finished = True
        if trainer.is_global_zero:
            self._ticket_dir().write_summary(self._summary())


class FixedTicketDispatch(type):
    """``LotteryTicketCallback(ticket=PATH, ...)`` builds a :class:`~lightning_tickets.fixed_ticket.FixedTicketCallback`
    (done in the metaclass, so ``__init__``'s signature stays what LightningCLI / jsonargparse read)."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls.__name__ == "LotteryTicketCallback" and kwargs.get("ticket") is not None:
            return FixedTicketCallback(*args, **kwargs)
        return super().__call__(*args, **kwargs)
