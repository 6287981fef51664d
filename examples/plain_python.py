"""Find a lottery ticket on the built-in toy model from plain Python, then load the best relaxed ticket.

    python examples/plain_python.py --out runs/plain_python

Runs IMP (dense round + 3 pruning rounds: 50%, 75%, 87.5% of the encoder weights) in well under 30 s on a CPU,
then reads ``summary.json``, loads the sparsest ticket that keeps >= 99% of the dense validation accuracy with
``Ticket.load`` and prints its per-tensor sparsity.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning as L

from lightning_tickets import LotteryTicketCallback, Ticket
from lightning_tickets.toy import ToyClassifier, ToyDataModule


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/plain_python", help="output directory (default: runs/plain_python)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    ticket_dir = out / "tickets"

    L.seed_everything(0)
    callback = LotteryTicketCallback(
        target_sparsity=0.875,
        schedule="geometric",  # prune 50% of the remaining weights per round: 0, 0.5, 0.75, 0.875
        rate=0.5,
        epochs_per_round=2,
        rewind="init",  # rewind to the weights at fit start (θ0) after every prune
        scope="encoder",  # nn.Linear weights of encoder.layer.N.* and pooler.dense
        monitor="val/acc",
        ticket_dir=str(ticket_dir),
        overwrite=True,  # re-running the example replaces its own tickets
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=callback.num_rounds * 2,  # 4 rounds x epochs_per_round
        callbacks=[callback],
        default_root_dir=out,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(ToyClassifier(), ToyDataModule(num_samples=1024))

    summary = json.loads((ticket_dir / "summary.json").read_text())
    best = summary["best_relaxed_ticket"]
    if best is None:
        print(f"no pruned round kept {summary['tolerance']:.0%} of the dense score {summary['dense_score']:.4f}")
        return
    ticket = Ticket.load(ticket_dir / best["ticket"])
    print(
        f"best relaxed ticket: {ticket_dir / best['ticket']} (round {best['round']}, sparsity {ticket.sparsity:.2%}, "
        f"val/acc {best['score']:.4f} vs dense {summary['dense_score']:.4f})"
    )
    for name, sparsity in ticket.tensor_sparsity().items():
        print(f"  {name:<45} {sparsity:7.2%}")


if __name__ == "__main__":
    main()
