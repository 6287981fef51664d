"""The shipped examples run: examples/plain_python.py and examples/toy/imp.yaml through the CLI (CPU, ~30 s)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightning_tickets import Ticket
from lightning_tickets.cli import main

ROOT = Path(__file__).resolve().parents[1]
PLAIN = ROOT / "examples" / "plain_python.py"
TOY_YAML = ROOT / "examples" / "toy" / "imp.yaml"


def test_plain_python_example(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(PLAIN), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,  # a hang guard: a loaded 2-core machine took > 120 s
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tickets = out / "tickets"
    summary = json.loads((tickets / "summary.json").read_text())
    assert summary["finished"] is True
    assert [r["sparsity"] for r in summary["rounds"]] == pytest.approx([0.0, 0.5, 0.75, 0.875], abs=1e-4)
    assert sorted(p.name for p in tickets.glob("round-*.safetensors")) == [
        f"round-{r:02d}.safetensors" for r in range(4)
    ]
    best = summary["best_relaxed_ticket"]
    if best is None:
        assert "no pruned round kept" in proc.stdout
        return
    assert f"best relaxed ticket: {tickets / best['ticket']} (round {best['round']}" in proc.stdout
    # the printed per-tensor sparsities are those of the ticket file
    printed = dict(re.findall(r"^  (\S+)\s+([\d.]+)%$", proc.stdout, flags=re.M))
    expected = Ticket.load(tickets / best["ticket"]).tensor_sparsity()
    assert printed.keys() == expected.keys() and len(printed) == 5
    for name, s in expected.items():
        assert float(printed[name]) == pytest.approx(100 * s, abs=0.006)


def test_toy_yaml_print_config_has_the_callback(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["lightning-tickets"])  # LightningCLI warns when sys.argv has pytest's args
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(TOY_YAML), "--print_config"])
    assert exc.value.code in (None, 0)
    config = yaml.safe_load(capsys.readouterr().out)
    callbacks = config["trainer"]["callbacks"]
    (cb,) = [c for c in callbacks if c["class_path"] == "lightning_tickets.LotteryTicketCallback"]
    assert cb["init_args"]["target_sparsity"] == 0.9
    assert cb["init_args"]["epochs_per_round"] == 2
    assert cb["init_args"]["ticket_dir"] == "runs/toy/tickets"
    assert config["model"]["class_path"] == "lightning_tickets.toy.ToyClassifier"


def test_toy_yaml_end_to_end_with_command_line_overrides(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # anything not redirected would land here, not in the repository
    monkeypatch.setattr(sys, "argv", ["lightning-tickets"])
    root, ticket_dir = tmp_path / "root", tmp_path / "tickets"
    main(
        [
            "fit",
            "--config",
            str(TOY_YAML),
            f"--trainer.default_root_dir={root}",
            f"--trainer.callbacks.init_args.ticket_dir={ticket_dir}",  # LightningCLI: applies to the last callback
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--data.init_args.num_samples=128",  # 2 batches per epoch keeps the test short
        ]
    )
    summary = json.loads((ticket_dir / "summary.json").read_text())
    assert summary["finished"] is True
    assert [r["sparsity"] for r in summary["rounds"]] == pytest.approx([0.0, 0.5, 0.75, 0.875, 0.9], abs=1e-4)
    for r in range(5):
        t = Ticket.load(ticket_dir / f"round-{r:02d}.safetensors")
        assert t.metadata["round"] == r and t.sparsity == pytest.approx(summary["rounds"][r]["sparsity"])
    assert (ticket_dir / "summary.png").exists()
    saved = yaml.safe_load((root / "config.yaml").read_text())  # LightningCLI saves the resolved config here
    assert saved["trainer"]["callbacks"][0]["init_args"]["ticket_dir"] == str(ticket_dir)
    assert not (tmp_path / "runs").exists()  # the yaml's own ticket_dir was overridden
    assert "relaxed winning ticket" in capsys.readouterr().out
