"""Direct tests of :mod:`lightning_tickets.report`: score rules, the relaxed winning ticket, the table, the files."""

from __future__ import annotations

import json
import os

import pytest

from lightning_tickets.report import (
    best_relaxed_ticket,
    format_table,
    keeps_score,
    plot_summary,
    relative_score,
    write_json_atomic,
)

NAN = float("nan")


@pytest.mark.parametrize(
    ("score", "dense", "tol", "mode", "expected"),
    [
        (0.80, 0.80, 0.99, "max", True),
        (0.792, 0.80, 0.99, "max", True),  # exactly 99% of dense
        (0.7919, 0.80, 0.99, "max", False),
        (0.90, 0.80, 0.99, "max", True),
        (0.5, 1.0, 0.5, "max", True),
        (0.4999, 1.0, 0.5, "max", False),
        # min (a loss): score <= dense / tolerance
        (2.0, 1.0, 0.5, "min", True),
        (2.0001, 1.0, 0.5, "min", False),
        (0.1, 1.0, 0.5, "min", True),
        (1.0101, 1.0, 0.99, "min", True),
        (1.0102, 1.0, 0.99, "min", False),
        # missing or NaN scores never keep the score
        (None, 0.8, 0.99, "max", False),
        (0.8, None, 0.99, "max", False),
        (NAN, 0.8, 0.99, "max", False),
        (0.8, NAN, 0.99, "max", False),
        (NAN, 1.0, 0.99, "min", False),
        (None, 1.0, 0.99, "min", False),
    ],
)
def test_keeps_score(score, dense, tol, mode, expected):
    assert keeps_score(score, dense, tol, mode) is expected


@pytest.mark.parametrize(
    ("score", "dense", "expected"),
    [(0.4, 0.8, 0.5), (0.0, 0.8, 0.0), (1.2, 0.8, 1.5), (None, 0.8, None), (0.4, None, None), (0.4, 0, None)],
)
def test_relative_score(score, dense, expected):
    got = relative_score(score, dense)
    assert got == (pytest.approx(expected) if expected is not None else None)


ROWS = [
    {"round": 0, "sparsity": 0.0, "score": 0.80, "ticket": "round-00.safetensors"},
    {"round": 1, "sparsity": 0.2, "score": 0.81, "ticket": "round-01.safetensors"},
    {"round": 2, "sparsity": 0.36, "score": 0.795, "ticket": "round-02.safetensors"},
    {"round": 3, "sparsity": 0.488, "score": 0.70, "ticket": "round-03.safetensors"},
    {"round": 4, "sparsity": 0.59, "score": None, "ticket": "round-04.safetensors"},
]


def test_best_relaxed_ticket_is_the_sparsest_winner():
    assert best_relaxed_ticket(ROWS, 0.80, 0.99, "max")["round"] == 2
    assert best_relaxed_ticket(ROWS, 0.80, 0.85, "max")["round"] == 3  # 0.70 >= 0.68
    assert best_relaxed_ticket(ROWS, 0.80, 1.0, "max")["round"] == 1


def test_best_relaxed_ticket_ignores_the_dense_round_and_returns_none():
    # only round 0 keeps the score: it is never the relaxed winning ticket
    rows = [{"round": 0, "sparsity": 0.0, "score": 0.8}, {"round": 1, "sparsity": 0.5, "score": 0.1}]
    assert best_relaxed_ticket(rows, 0.8, 0.99, "max") is None
    assert best_relaxed_ticket([], 0.8, 0.99, "max") is None
    assert best_relaxed_ticket(ROWS, None, 0.99, "max") is None
    assert best_relaxed_ticket([{"round": 1, "sparsity": 0.5}], 0.8, 0.5, "max") is None  # no score logged


def test_best_relaxed_ticket_min_mode():
    rows = [
        {"round": 0, "sparsity": 0.0, "score": 1.00},
        {"round": 1, "sparsity": 0.5, "score": 1.005},
        {"round": 2, "sparsity": 0.75, "score": 1.02},
        {"round": 3, "sparsity": 0.9, "score": 0.9},
    ]
    assert best_relaxed_ticket(rows, 1.0, 0.99, "min")["round"] == 3
    assert best_relaxed_ticket(rows[:3], 1.0, 0.99, "min")["round"] == 1


def test_format_table_exact():
    rows = [
        {"round": 0, "sparsity": 0.0, "score": 0.8},
        {"round": 1, "sparsity": 0.5, "score": 0.795},
        {"round": 2, "sparsity": 0.75, "score": 0.5},
        {"round": 3, "sparsity": 0.875, "score": None},
    ]
    expected = [
        "round  sparsity         val/acc   /dense   kept 99%",
        "    0     0.00%          0.8000    1.000      dense",
        "    1    50.00%          0.7950    0.994        yes",
        "    2    75.00%          0.5000    0.625         no",
        "    3    87.50%               -        -         no",
    ]
    assert format_table(rows, "val/acc", 0.8, 0.99, "max").splitlines() == expected


def test_format_table_defaults_and_no_dense_score():
    text = format_table([{"round": 1, "sparsity": 0.2, "score": 0.3}], None, None, 0.9, "max")
    header, row = text.splitlines()
    assert header.split() == ["round", "sparsity", "score", "/dense", "kept", "90%"]
    assert row.split() == ["1", "20.00%", "0.3000", "-", "no"]
    assert format_table([], "m", 1.0, 0.99, "max").count("\n") == 0  # header only


def test_write_json_atomic_content_and_no_temp_files(tmp_path):
    data = {"rounds": [{"round": 0, "score": 0.5}], "nan": None, "name": "é"}
    path = write_json_atomic(tmp_path / "sub" / "summary.json", data)
    assert path == tmp_path / "sub" / "summary.json"
    assert json.loads(path.read_text()) == data
    assert path.read_text().endswith("}\n")
    assert sorted(p.name for p in path.parent.iterdir()) == ["summary.json"]
    write_json_atomic(path, {"v": 2})  # replaces
    assert json.loads(path.read_text()) == {"v": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["summary.json"]


def test_write_json_atomic_failure_keeps_previous_file(tmp_path):
    path = write_json_atomic(tmp_path / "summary.json", {"v": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"ok": 1, "bad": object()})  # fails half-way through json.dump
    assert json.loads(path.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_write_json_atomic_mode_follows_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = write_json_atomic(tmp_path / "s.json", {"a": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


def test_plot_summary_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    summary = {
        "monitor": "val/acc",
        "mode": "max",
        "tolerance": 0.99,
        "dense_score": 0.8,
        "rounds": ROWS,
        "best_relaxed_ticket": ROWS[2],
    }
    path = plot_summary([summary, {**summary, "best_relaxed_ticket": None}], tmp_path / "out" / "summary.png")
    assert path == tmp_path / "out" / "summary.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert sorted(p.name for p in path.parent.iterdir()) == ["summary.png"]
