"""The docstring examples (``>>>``) of every module of the package run and print what they show (as
``pytest --doctest-modules lightning_tickets``, but inside the normal suite)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import lightning_tickets

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(lightning_tickets.__path__, "lightning_tickets.")
    if not m.name.endswith("__main__")
)


def test_every_module_is_collected():
    assert "lightning_tickets.ticket" in MODULES and "lightning_tickets.structured.units" in MODULES
    assert len(MODULES) > 40


@pytest.mark.parametrize("name", ["lightning_tickets", *MODULES])
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder().find(module, name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    out: list[str] = []
    for test in tests:
        runner.run(test, out=out.append)
    assert runner.failures == 0, "".join(out)
