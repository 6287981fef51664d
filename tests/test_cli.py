"""The ``lightning-tickets`` entry point: --version, --help listing the ticket tools, shipped config names, demo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import lightning_tickets
from lightning_tickets.cli import _demo_args, main, resolve_config_args
from lightning_tickets.paths import example_config, example_configs
from lightning_tickets.tools import build_parser

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lightning-tickets"])  # LightningCLI warns when sys.argv has pytest's args


def _exit_code(args, capsys) -> tuple[int | None, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_version(capsys):
    code, out, _ = _exit_code(["--version"], capsys)
    assert code == 0 and out.strip() == f"lightning-tickets {lightning_tickets.__version__}"


def test_console_script_version_in_a_subprocess():
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_tickets.cli", "--version"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"lightning-tickets {lightning_tickets.__version__}"


def test_help_lists_every_ticket_tool_demo_and_version(capsys):
    code, out, _ = _exit_code(["--help"], capsys)
    assert code == 0 and "fit" in out
    tools = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    assert len(tools.choices) >= 4
    for name in tools.choices:  # every tool of lightning_tickets.tools, one line each
        assert f"lightning-tickets ticket {name} " in out, name
    assert "lightning-tickets demo [NAME]" in out and "lightning-tickets --version" in out


def test_shipped_config_names_resolve_and_other_values_are_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no examples/ here: as after `pip install`
    toy = str(example_config("toy/imp"))
    for spelling in ("toy/imp", "toy/imp.yaml", "examples/toy/imp.yaml"):
        assert resolve_config_args(["fit", "--config", spelling]) == ["fit", "--config", toy]
        assert resolve_config_args(["fit", f"--config={spelling}"]) == ["fit", f"--config={toy}"]
        assert resolve_config_args(["fit", "-c", spelling, "--x=1"]) == ["fit", "-c", toy, "--x=1"]
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "imp.yaml").write_text("seed_everything: 1\n")
    assert resolve_config_args(["fit", "--config", "toy/imp.yaml"]) == ["fit", "--config", "toy/imp.yaml"]  # own file
    inline = "{trainer: {max_epochs: 1}}"
    assert resolve_config_args(["fit", "--config", inline]) == ["fit", "--config", inline]


def test_unknown_config_name_lists_the_shipped_ones(capsys):
    code, _, err = _exit_code(["fit", "--config", "toy/nope"], capsys)
    assert code == 2 and "'toy/nope' is neither an existing file nor a shipped example config" in err
    assert "easy_vqa/imp" in err and "toy/imp" in err


def test_fit_by_name_prints_the_same_config_as_by_path(capsys):
    code, out, _ = _exit_code(["fit", "--config", "toy/imp", "--print_config"], capsys)
    assert code in (None, 0)
    by_name = yaml.safe_load(out)
    code, out, _ = _exit_code(
        ["fit", "--config", str(ROOT / "examples" / "toy" / "imp.yaml"), "--print_config"], capsys
    )
    assert code in (None, 0) and yaml.safe_load(out) == by_name
    assert by_name["model"]["class_path"] == "lightning_tickets.toy.ToyClassifier"


def test_demo_list_and_arguments(capsys):
    code, out, _ = _exit_code(["demo", "--list"], capsys)
    assert code == 0 and out.split() == example_configs()
    assert _demo_args([]) == ["fit", "--config", str(example_config("toy/imp"))]
    assert _demo_args(["easy_vqa", "--trainer.max_steps=2"]) == [
        "fit",
        "--config",
        str(example_config("easy_vqa/imp")),
        "--trainer.max_steps=2",
    ]
    assert _demo_args(["easy_vqa/quick"])[2] == str(example_config("easy_vqa/quick"))
    code, _, err = _exit_code(["demo", "nope"], capsys)
    assert code == 2 and "nope/imp" in err


def test_demo_runs_the_toy_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the shipped yaml writes runs/toy/... relative to the working directory
    main(
        [
            "demo",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--data.init_args.num_samples=128",
        ]
    )
    summary = json.loads((tmp_path / "runs" / "toy" / "tickets" / "summary.json").read_text())
    assert summary["finished"] is True and len(summary["rounds"]) == 5
