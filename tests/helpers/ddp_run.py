"""IMP on 2 CPU processes (gloo), ranks starting from different weights; each rank dumps its state.

Usage:
    python tests/helpers/ddp_run.py toy {ddp,ddp_spawn} OUT_DIR [method]
    python tests/helpers/ddp_run.py adversarial STRATEGY OUT_DIR
    python tests/helpers/ddp_run.py early_bird STRATEGY OUT_DIR

``toy``: the toy classifier, unseeded, each rank re-initialised with its own draw (3 rounds to 75 %).
``early_bird``: the toy run with early-bird rounds; rank 1 measures every distance as 1.0 (it would never converge on
its own): the ranks must still record rank 0's distances and end the same rounds at the same steps.
``adversarial``: VILLA-style adversarial VQA training on a tiny UNITER (2 rounds to 50 %); UNITER without masked
regions never uses its MRM mask embedding: use ``ddp_find_unused_parameters_true``.

Every rank writes ``rank{R}.pt``: θ0 at fit start, the callback's snapshot, masks and results, the final weights
and the number of optimizer steps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_tickets import LotteryTicketCallback
from lightning_tickets.toy import ToyClassifier, ToyDataModule


class RankNoisyToy(ToyClassifier):
    """Each rank re-initialises its weights with its own random draw before DDP wraps the model."""

    def setup(self, stage):
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))) + 1000 * self.global_rank)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


class RandomVQA(Dataset):
    """32 fixed random VQA examples for a UNITER with ``img_dim=8`` and 4 answers."""

    def __init__(self, n: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.items = [
            {
                "input_ids": torch.randint(5, 900, (5,), generator=g),
                "img_feat": torch.randn(3, 8, generator=g),
                "img_pos_feat": torch.rand(3, 7, generator=g),
                "targets": torch.rand(4, generator=g),
            }
            for _ in range(n)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


class Dump(L.Callback):
    def __init__(self, cb: LotteryTicketCallback, out: str) -> None:
        self.cb, self.out, self.theta0 = cb, Path(out), None

    def on_fit_start(self, trainer, pl_module) -> None:
        self.theta0 = {n: p.detach().clone() for n, p in pl_module.named_parameters()}

    def on_fit_end(self, trainer, pl_module) -> None:
        torch.save(
            {
                "theta0": self.theta0,
                "snapshot": self.cb.state.snapshot,
                "masks": self.cb.masks,
                "final": {n: p.detach().clone() for n, p in pl_module.named_parameters()},
                "results": self.cb.results,
                "steps": trainer.global_step,
            },
            self.out / f"rank{trainer.global_rank}.pt",
        )


def toy(out: str, method: str = "magnitude") -> tuple[LotteryTicketCallback, L.LightningModule, dict]:
    cb = LotteryTicketCallback(
        0.75, rate=0.5, epochs_per_round=1, monitor="val/acc", method=method, ticket_dir=str(Path(out) / "tickets"),
        plot=False,
    )  # fmt: skip
    data = ToyDataModule(num_samples=256, batch_size=32, shuffle=True)
    return cb, RankNoisyToy(), {"datamodule": data, "max_epochs": 3}


class DisagreeingToy(RankNoisyToy):
    """Rank 1 sees every early-bird distance as 1.0 (as if its masks differed completely)."""

    def setup(self, stage):
        super().setup(stage)
        if self.global_rank == 1:
            from lightning_tickets import early_bird

            early_bird.packed_distance = lambda a, b: (1, 1)


def early_bird_toy(out: str) -> tuple[LotteryTicketCallback, L.LightningModule, dict]:
    from lightning_tickets.early_bird import EarlyBird

    cb = LotteryTicketCallback(
        0.75, rate=0.5, epochs_per_round=3, monitor="val/acc", ticket_dir=str(Path(out) / "tickets"), plot=False,
        early_bird=EarlyBird(every=2, threshold=0.5, window=1),
    )  # fmt: skip
    data = ToyDataModule(num_samples=256, batch_size=32, shuffle=True)  # 4 steps per epoch on each of 2 ranks
    return cb, DisagreeingToy(), {"datamodule": data, "max_epochs": 9}


def adversarial(out: str) -> tuple[LotteryTicketCallback, L.LightningModule, dict]:
    from lightning_tickets.backbones import Uniter
    from lightning_tickets.tasks import VQA
    from lightning_tickets.tasks.adversarial import AdversarialConfig

    torch.manual_seed(int(torch.randint(0, 1000, (1,))))  # ranks start from different weights: DDP must sync them
    model = VQA(Uniter("tiny", img_dim=8), num_answers=4, lr=1e-2, adversarial=AdversarialConfig(steps=2, epsilon=0.5))
    cb = LotteryTicketCallback(
        0.5, rate=0.5, epochs_per_round=1, monitor=None, ticket_dir=str(Path(out) / "tickets"), plot=False
    )
    return cb, model, {"train_dataloaders": DataLoader(RandomVQA(), batch_size=4, shuffle=True), "max_epochs": 2}


def main() -> None:
    torch.multiprocessing.set_sharing_strategy("file_system")
    kind, strategy, out, *rest = sys.argv[1:]
    cb, model, run = {"toy": toy, "adversarial": adversarial, "early_bird": early_bird_toy}[kind](out, *rest)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=strategy,
        max_epochs=run.pop("max_epochs"),
        callbacks=[cb, Dump(cb, out)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, **run)


if __name__ == "__main__":
    main()
