"""Adversarial (VILLA-style) VQA training + IMP on 2 CPU processes (gloo); each rank dumps its final state.

Usage: python tests/ddp_adversarial_run.py STRATEGY OUT_DIR

UNITER without masked regions never uses its MRM mask embedding: use ``ddp_find_unused_parameters_true``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_tickets import LotteryTicketCallback
from lightning_tickets.backbones import Uniter
from lightning_tickets.tasks import VQA
from lightning_tickets.tasks.adversarial import AdversarialConfig


class RandomVQA(Dataset):
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
        self.cb, self.out = cb, Path(out)

    def on_fit_end(self, trainer, pl_module) -> None:
        torch.save(
            {
                "masks": self.cb.masks,
                "final": {n: p.detach().clone() for n, p in pl_module.named_parameters()},
                "steps": trainer.global_step,
            },
            self.out / f"rank{trainer.global_rank}.pt",
        )


def main() -> None:
    strategy, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(int(torch.randint(0, 1000, (1,))))  # ranks start from different weights: DDP must sync them
    model = VQA(Uniter("tiny", img_dim=8), num_answers=4, lr=1e-2, adversarial=AdversarialConfig(steps=2, epsilon=0.5))
    cb = LotteryTicketCallback(
        0.5, rate=0.5, epochs_per_round=1, monitor=None, ticket_dir=str(Path(out) / "tickets"), plot=False
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=strategy,
        max_epochs=2,
        callbacks=[cb, Dump(cb, out)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, DataLoader(RandomVQA(), batch_size=4, shuffle=True))


if __name__ == "__main__":
    main()
