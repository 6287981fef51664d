"""Shared pytest configuration: the ``slow`` marker and small helpers."""

from __future__ import annotations

import os
import warnings

import pytest

warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")

# Tests never use the network: a path that looks like a hub id must resolve from a local cache or fail at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("LT_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow experiment: run with --runslow or LT_RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark("transfer")`` imports ``benchmarks/transfer.py`` as a module (``benchmarks/`` goes on
    ``sys.path``, as when a script there is run directly, so that its imports of sibling modules work)."""
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"{name}_bench", root / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load


@pytest.fixture
def quick_trainer(tmp_path):
    """``quick_trainer(callbacks=(), **overrides)``: a quiet Trainer of 2 epochs x 2 training batches and 1
    validation batch, without logger, checkpoints, progress bar, model summary or sanity check, under ``tmp_path``."""
    import lightning as L

    def make(callbacks=(), **overrides) -> L.Trainer:
        settings = dict(
            max_epochs=2,
            limit_train_batches=2,
            limit_val_batches=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=tmp_path,
        )
        return L.Trainer(callbacks=list(callbacks), **{**settings, **overrides})

    return make


@pytest.fixture
def two_round_ticket(tmp_path):
    """``two_round_ticket(monitor, mode="max")``: an IMP callback of two one-epoch rounds (dense, then 50 %),
    tickets in ``tmp_path / "t"``."""
    from lightning_tickets import LotteryTicketCallback

    def make(monitor: str | None, mode: str = "max") -> LotteryTicketCallback:
        return LotteryTicketCallback(
            target_sparsity=0.5, rate=0.5, epochs_per_round=1, monitor=monitor, mode=mode,
            ticket_dir=str(tmp_path / "t"), plot=False,
        )  # fmt: skip

    return make
