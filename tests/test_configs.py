"""Every yaml under examples/ parses with the ``lightning-tickets`` CLI (``fit --print_config``), holds a
``LotteryTicketCallback`` and the expected model; the paper configs carry the paper's IMP settings, and their data
modules can be built from the placeholder paths without touching any file (everything is read lazily)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import yaml

from lightning_tickets.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CONFIGS = EXAMPLES / "configs"
CALLBACK = "lightning_tickets.LotteryTicketCallback"

TASK_CLASSES = {
    "vqa": "lightning_tickets.tasks.VQA",
    "gqa": "lightning_tickets.tasks.GQA",
    "ve": "lightning_tickets.tasks.VisualEntailment",
    "nlvr2": "lightning_tickets.tasks.NLVR2",
    "vcr": "lightning_tickets.tasks.VCR",
    "refcoco": "lightning_tickets.tasks.ReferringExpression",
    "retrieval": "lightning_tickets.tasks.ImageTextRetrieval",
    "pretrain": "lightning_tickets.tasks.Pretraining",
}
BACKBONES = {
    "uniter": "lightning_tickets.backbones.Uniter",
    "lxmert": "lightning_tickets.backbones.Lxmert",
    "vilt": "lightning_tickets.backbones.Vilt",
}
# (target sparsity, monitor) of every pairing of Gan et al. (AAAI 2022); ViLT retrieval uses the paper's ViLT 30%.
PAPER = {
    "uniter_vqa": (0.7, "val/vqa_score"), "uniter_gqa": (0.7, "val/acc"), "uniter_ve": (0.6, "val/acc"),
    "uniter_nlvr2": (0.6, "val/acc"), "uniter_vcr": (0.5, "val/q2ar"), "uniter_refcoco": (0.7, "val/acc"),
    "uniter_retrieval": (0.6, "val/rsum"), "uniter_pretrain": (0.9, "val/loss"),
    "lxmert_vqa": (0.7, "val/vqa_score"), "lxmert_gqa": (0.7, "val/acc"), "lxmert_nlvr2": (0.7, "val/acc"),
    "vilt_vqa": (0.3, "val/vqa_score"), "vilt_nlvr2": (0.3, "val/acc"), "vilt_retrieval": (0.3, "val/rsum"),
}  # fmt: skip
EASY_VQA = ("imp.yaml", "quick.yaml")

ALL_YAMLS = sorted(p for p in EXAMPLES.rglob("*.yaml") if p.is_file())


def print_config(path: Path, monkeypatch, capsys) -> dict:
    monkeypatch.setattr(sys, "argv", ["lightning-tickets"])  # LightningCLI warns when sys.argv has pytest's args
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(path), "--print_config"])
    assert exc.value.code in (None, 0), capsys.readouterr().err[-3000:]
    return yaml.safe_load(capsys.readouterr().out)


def ticket_callback(config: dict) -> dict:
    (cb,) = [c for c in config["trainer"]["callbacks"] or [] if c["class_path"] == CALLBACK]
    return cb["init_args"]


def test_every_paper_pairing_has_a_config():
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(PAPER)


@pytest.mark.parametrize("path", ALL_YAMLS, ids=[str(p.relative_to(EXAMPLES)) for p in ALL_YAMLS])
def test_yaml_parses_with_the_callback_and_model(path, monkeypatch, capsys):
    raw = yaml.safe_load(path.read_text())
    config = print_config(path, monkeypatch, capsys)
    args = ticket_callback(config)
    if path.parent == CONFIGS:
        kind, task = path.stem.split("_", 1)
        assert config["model"]["class_path"] == TASK_CLASSES[task]
        assert config["model"]["init_args"]["backbone"]["class_path"] == BACKBONES[kind]
    else:  # toy / easy_vqa: the model the yaml names survives parsing
        assert config["model"]["class_path"] == raw["model"]["class_path"]
    assert args["ticket_dir"] == raw["trainer"]["callbacks"][0]["init_args"]["ticket_dir"]


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_settings(name, monkeypatch, capsys):
    config = print_config(CONFIGS / f"{name}.yaml", monkeypatch, capsys)
    target, monitor = PAPER[name]
    args = ticket_callback(config)
    assert args["target_sparsity"] == pytest.approx(target)
    assert (args["schedule"], args["rate"], args["rewind"], args["scope"]) == ("linear", 0.1, "init", "encoder")
    assert args["monitor"] == monitor and args["mode"] == ("min" if monitor == "val/loss" else "max")
    assert args["method"] == "magnitude" and args["granularity"] == "global"
    rounds = round(target / 0.1) + 1  # dense round + one round per 10% step
    trainer = config["trainer"]
    if args["epochs_per_round"] is not None:  # one full fine-tune per round, every round validated
        assert trainer["max_epochs"] >= rounds * args["epochs_per_round"]
        assert args["epochs_per_round"] % (trainer["check_val_every_n_epoch"] or 1) == 0
    else:
        assert trainer["max_steps"] >= rounds * args["steps_per_round"]
        assert trainer["val_check_interval"] == args["steps_per_round"]
    assert trainer["accelerator"] == "gpu" and trainer["strategy"].startswith("ddp")
    # nothing is downloaded: checkpoints and data are local placeholders
    backbone = config["model"]["init_args"]["backbone"]["init_args"]
    weights = backbone.get("uniter_checkpoint") or backbone.get("pretrained_path")
    assert weights.startswith("/path/to/")


@pytest.mark.parametrize("name", sorted(PAPER))
def test_data_module_is_lazy_about_placeholder_paths(name, monkeypatch, capsys):
    """Building the data module from the placeholder config opens no file (it would raise FileNotFoundError)."""
    config = print_config(CONFIGS / f"{name}.yaml", monkeypatch, capsys)
    module, _, cls = config["data"]["class_path"].rpartition(".")
    dm = getattr(importlib.import_module(module), cls)(**config["data"]["init_args"])
    assert str(dm.features if isinstance(dm.features, str) else dm.features[0]).startswith("/path/to/")


@pytest.mark.parametrize("name", EASY_VQA)
def test_easy_vqa_yaml_parses(name, monkeypatch, capsys):
    path = EXAMPLES / "easy_vqa" / name
    if not path.is_file():
        pytest.skip(f"{path.relative_to(ROOT)} does not exist yet")
    config = print_config(path, monkeypatch, capsys)
    ticket_callback(config)
    assert config["model"]["class_path"] == "lightning_tickets.tasks.VQA"


# the fixed-ticket command lines of docs/reproduce.md (baselines and transfer) parse and build a valid callback
FIXED_TICKET_OVERRIDES = {
    "rp": ["ticket_mask=random_matched", "seed=1"],
    "shuffled": ["ticket_weights=shuffled"],
    "theta_prime": ["ticket_weights=/path/to/bert-theta-prime.safetensors"],
    "remap": ['ticket_remap={"uniter.": "backbone."}'],
}


@pytest.mark.parametrize("variant", sorted(FIXED_TICKET_OVERRIDES))
def test_documented_fixed_ticket_overrides(variant, monkeypatch, capsys):
    from lightning_tickets import LotteryTicketCallback

    extra = [f"--trainer.callbacks.init_args.{a}" for a in FIXED_TICKET_OVERRIDES[variant]]
    monkeypatch.setattr(sys, "argv", ["lightning-tickets"])
    with pytest.raises(SystemExit) as exc:
        main(
            ["fit", "--config", str(CONFIGS / "uniter_vqa.yaml"), "--trainer.max_epochs=5",
             "--trainer.callbacks.init_args.ticket=/path/to/round-07.safetensors",
             "--trainer.callbacks.init_args.ticket_dir=/path/to/rp70", *extra, "--print_config"]
        )  # fmt: skip
    assert exc.value.code in (None, 0)
    args = ticket_callback(yaml.safe_load(capsys.readouterr().out))
    assert args["ticket"] == "/path/to/round-07.safetensors" and args["ticket_dir"] == "/path/to/rp70"
    cb = LotteryTicketCallback(**args)  # the combination is accepted (no file is opened before fit)
    assert cb.sparsities == [0.0]
    if variant == "remap":
        assert cb.ticket_remap == {"uniter.": "backbone."}


def test_reproduce_doc_names_existing_configs():
    import re

    text = (ROOT / "docs" / "reproduce.md").read_text()
    named = set(re.findall(r"`((?:uniter|lxmert|vilt)_\w+)\.yaml`", text))
    assert named == set(PAPER)


def test_early_bird_yaml_sets_the_dataclass(monkeypatch, capsys):
    """``early_bird:`` in yaml reaches the callback as an EarlyBird (jsonargparse builds the nested dataclass), and
    the Trainer validates on a fixed step grid (early ends happen at validations)."""
    from lightning_tickets import LotteryTicketCallback
    from lightning_tickets.early_bird import EarlyBird

    config = print_config(EXAMPLES / "toy" / "early_bird.yaml", monkeypatch, capsys)
    args = ticket_callback(config)
    assert args["early_bird"] == {"every": 10, "threshold": 0.02, "window": 3, "one_shot": False}
    trainer = config["trainer"]
    assert trainer["check_val_every_n_epoch"] is None and args["steps_per_round"] % trainer["val_check_interval"] == 0
    assert LotteryTicketCallback(**args).early_bird == EarlyBird(every=10, threshold=0.02, window=3)
    monkeypatch.setattr(sys, "argv", ["lightning-tickets"])
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(EXAMPLES / "toy" / "early_bird.yaml"), "--print_config",
              "--trainer.callbacks.init_args.early_bird.one_shot=true"])  # fmt: skip
    assert ticket_callback(yaml.safe_load(capsys.readouterr().out))["early_bird"]["one_shot"] is True
