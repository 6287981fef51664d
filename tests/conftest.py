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
