"""Shared pytest configuration: the ``slow`` marker and small helpers."""

from __future__ import annotations

import os
import warnings

import pytest

warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")


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
