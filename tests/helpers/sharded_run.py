"""Run the callback on the toy model with 2 CPU processes (gloo): DDP, or FSDP2 through ModelParallelStrategy.

Usage: python tests/helpers/sharded_run.py {ddp,fsdp2} OUT_DIR [--ticket PATH] [--ckpt-every-round] [--resume CKPT]
       [--max-epochs N] [--accelerator cpu|cuda] [--devices N] [--early-bird]   (cuda: see benchmarks/gpu_check.sh)

``--early-bird``: rounds of 3 epochs with ``EarlyBird(every=2, threshold=0.5, window=4)`` (8 steps per epoch: every
pruning round converges at its 10th step and ends at the end of its 2nd epoch).

Every rank dumps ``rank{R}.pt``: its local masks and snapshot (shards under FSDP2), the full final weights
(gathered), the results and the local shard shapes. Seeded: both modes start from the same weights and see the same
batches, so FSDP2 must reproduce DDP's tickets exactly.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_tickets import LotteryTicketCallback
from lightning_tickets.sharded import is_sharded, local, reshard
from lightning_tickets.toy import ToyClassifier, ToyDataModule

# odd widths: every sharded weight splits unevenly over 2 ranks (e.g. 67 rows -> 34 + 33)
MODEL = {"in_features": 32, "hidden": 33, "ffn": 67, "num_layers": 2, "num_classes": 3}
DATA = {"num_samples": 256, "in_features": 32, "num_classes": 3, "batch_size": 16, "shuffle": True}


class ShardedToy(ToyClassifier):
    """The toy classifier; under ModelParallelStrategy each block, the pooler and the root get ``fully_shard``."""

    def configure_model(self) -> None:
        if self._device_mesh is None:  # DDP: nothing to do
            return
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for block in self.encoder.layer:
            fully_shard(block, mesh=mesh)
        fully_shard(self.pooler.dense, mesh=mesh)  # _Dense.forward is never called: shard the Linear
        fully_shard(self, mesh=mesh)


class Dump(L.Callback):
    def __init__(self, cb: LotteryTicketCallback, out: Path) -> None:
        self.cb, self.out = cb, out

    def on_fit_end(self, trainer, pl_module):
        reshard(pl_module)
        params = dict(pl_module.named_parameters())
        final = {n: (p.full_tensor() if is_sharded(p) else p).detach().cpu().clone() for n, p in params.items()}
        snap = self.cb.state.snapshot
        torch.save(
            {
                "masks": None if self.cb.masks is None else {n: m.cpu().clone() for n, m in self.cb.masks.items()},
                "snapshot": None if snap is None else {n: t.clone() for n, t in snap.items()},
                "final": final,
                "results": self.cb.results,
                "local_shapes": {n: list(local(p).shape) for n, p in params.items()},
                "sharded": [n for n, p in params.items() if is_sharded(p)],
            },
            self.out / f"rank{trainer.global_rank}.pt",
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["ddp", "fsdp2"])
    ap.add_argument("out")
    ap.add_argument("--ticket", default=None)
    ap.add_argument("--ckpt-every-round", action="store_true")
    ap.add_argument("--resume", default=None)
    ap.add_argument("--max-epochs", type=int, default=3)
    ap.add_argument("--accelerator", default="cpu")
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--early-bird", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    L.seed_everything(0, verbose=False)
    if args.ticket:
        cb = LotteryTicketCallback(ticket=args.ticket, monitor="val/acc", ticket_dir=str(out / "fixed"), plot=False)
    else:
        eb = {"every": 2, "threshold": 0.5, "window": 4} if args.early_bird else None
        cb = LotteryTicketCallback(
            0.75, rate=0.5, epochs_per_round=3 if eb else 1, monitor="val/acc", ticket_dir=str(out / "tickets"),
            plot=False, early_bird=eb,
        )  # fmt: skip
    callbacks = [cb, Dump(cb, out)]
    if args.ckpt_every_round:
        callbacks.append(ModelCheckpoint(dirpath=out / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}"))
    if args.mode == "fsdp2":
        from lightning.pytorch.strategies import ModelParallelStrategy

        strategy = ModelParallelStrategy(data_parallel_size=args.devices, tensor_parallel_size=1)
    else:
        strategy = "ddp"
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=args.devices,
        strategy=strategy,
        max_epochs=args.max_epochs,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=args.ckpt_every_round,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=out,
    )
    trainer.fit(ShardedToy(**MODEL), ToyDataModule(**DATA), ckpt_path=args.resume)


if __name__ == "__main__":
    main()
