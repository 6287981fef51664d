"""Run IMP on the toy model with 2 CPU processes (gloo) WITHOUT seeding; each rank dumps its state.

Usage: python tests/ddp_run.py {ddp,ddp_spawn} OUT_DIR [method]
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch

from lightning_tickets import LotteryTicketCallback
from lightning_tickets.toy import ToyClassifier, ToyDataModule


class RankNoisyToy(ToyClassifier):
    """Each rank re-initialises its weights with its own random draw before DDP wraps the model."""

    def setup(self, stage):
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))) + 1000 * self.global_rank)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


class Dump(L.Callback):
    def __init__(self, cb, out):
        self.cb, self.out, self.theta0 = cb, Path(out), None

    def on_fit_start(self, trainer, pl_module):
        self.theta0 = {n: p.detach().clone() for n, p in pl_module.named_parameters()}

    def on_fit_end(self, trainer, pl_module):
        torch.save(
            {
                "theta0": self.theta0,
                "snapshot": self.cb.state.snapshot,
                "masks": self.cb.masks,
                "final": {n: p.detach().clone() for n, p in pl_module.named_parameters()},
                "results": self.cb.results,
            },
            self.out / f"rank{trainer.global_rank}.pt",
        )


def main() -> None:
    torch.multiprocessing.set_sharing_strategy("file_system")
    strategy, out = sys.argv[1], sys.argv[2]
    method = sys.argv[3] if len(sys.argv) > 3 else "magnitude"
    cb = LotteryTicketCallback(
        0.75,
        rate=0.5,
        epochs_per_round=1,
        monitor="val/acc",
        method=method,
        ticket_dir=str(Path(out) / "tickets"),
        plot=False,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=strategy,
        max_epochs=3,
        callbacks=[cb, Dump(cb, out)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(RankNoisyToy(), ToyDataModule(num_samples=256, batch_size=32, shuffle=True))


if __name__ == "__main__":
    main()
