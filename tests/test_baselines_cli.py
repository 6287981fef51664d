"""Every baseline of docs/baselines.md runs from yaml: the toy yaml through ``lightning-tickets fit`` with the
fixed-ticket overrides (the one-shot ticket made in Python first, as documented)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_tickets import Ticket
from lightning_tickets.baselines import one_shot_ticket
from lightning_tickets.cli import main
from lightning_tickets.toy import ToyClassifier

TOY_YAML = Path(__file__).resolve().parents[1] / "examples" / "toy" / "imp.yaml"

VARIANTS = {
    "ticket": [],
    "rp_matched": ["ticket_mask=random_matched", "seed=1"],
    "rp_global": ["ticket_mask=random"],
    "shuffled": ["ticket_weights=shuffled"],
    "reinit": ["ticket_weights=reinit"],
    "theta_prime": ["ticket_weights={other}"],
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("baselines")
    L.seed_everything(0)
    theta0 = ToyClassifier(num_layers=2)  # what the yaml builds (seed_everything: 0)
    one_shot_ticket(theta0, 0.6).save(d / "one_shot.safetensors")
    torch.manual_seed(7)
    torch.save(ToyClassifier(num_layers=2).state_dict(), d / "other.pt")
    return {"ticket": str(d / "one_shot.safetensors"), "other": str(d / "other.pt")}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_baseline_from_yaml(variant, files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lightning-tickets"])
    extra = [f"--trainer.callbacks.init_args.{a.format(**files)}" for a in VARIANTS[variant]]
    out = tmp_path / "out"
    main(
        ["fit", "--config", str(TOY_YAML), "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path}",
         f"--trainer.callbacks.init_args.ticket={files['ticket']}", f"--trainer.callbacks.init_args.ticket_dir={out}",
         "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
         "--data.init_args.num_samples=128", *extra]
    )  # fmt: skip
    (row,) = json.loads((out / "summary.json").read_text())["rounds"]
    ticket = Ticket.load(files["ticket"])
    assert row["sparsity"] == pytest.approx(ticket.sparsity, abs=1e-6)  # every baseline prunes exactly as many
    assert row["score"] is not None and 0.0 <= row["score"] <= 1.0
    assert row["match"]["matched"] == {n: n for n in ticket.masks} and row["match"]["missing"] == []
