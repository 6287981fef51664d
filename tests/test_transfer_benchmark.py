"""benchmarks/transfer.py without training: argument checks, the cell grid and its resumption, the report maths."""

from __future__ import annotations

import importlib.util
import json

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("transfer")


def _args(bench, tmp_path, *extra):
    return bench.parse_args(
        ["--sources", "color", "shape", "pretrain", "--targets", "color", "shape", "--sparsities", "0.5",
         "--schedule", "0.5", "--cache", str(tmp_path), "--out", str(tmp_path / "out" / "transfer"), *extra]
    )  # fmt: skip


def test_argument_checks(bench, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--sparsities", "0.6", "--schedule", "0.5", "0.7"])
    assert "--sparsities [0.6] are not rounds of --schedule [0.5, 0.7]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args(["--sources", "color", "--targets", "shape"])
    assert "targets ['shape'] need their own ticket" in capsys.readouterr().err
    assert bench.parse_args([]).schedule == [0.3, 0.5, 0.7]


def _write(tmp_path, bench, cell, **data):
    (tmp_path / f"{bench.cell_name(cell)}.json").write_text(json.dumps({**cell, "name": bench.cell_name(cell), **data}))


def test_grid_resumes_and_report_is_relative_to_the_own_ticket(bench, tmp_path):
    args = _args(bench, tmp_path)
    names = [bench.cell_name(c) for c in bench.cells_for(args, tmp_path)]
    assert names == ["imp-color-seed0", "imp-shape-seed0", "imp-pretrain-seed0"]  # fine-tunes wait for tickets
    rows = lambda dense: [{"round": 0, "sparsity": 0.0, "val": dense, "test": dense}]  # noqa: E731
    for src, dense in (("color", 0.9), ("shape", 0.8)):
        _write(tmp_path, bench, {"kind": "imp", "source": src, "seed": 0}, rows=rows(dense), seconds=1.0)
    _write(tmp_path, bench, {"kind": "imp", "source": "pretrain", "seed": 0}, rows=[], seconds=1.0)
    grid = bench.cells_for(args, tmp_path)
    todo = [bench.cell_name(c) for c in grid if not (tmp_path / f"{bench.cell_name(c)}.json").exists()]
    assert todo[0] == "ft-color-to-color-s50-seed0" and "rp-shape-s50-seed0" in todo and len(todo) == 3 * 2 + 2
    scores = {("color", "color"): 0.8, ("shape", "color"): 0.6, ("pretrain", "color"): 0.4,
              ("color", "shape"): 0.5, ("shape", "shape"): 1.0, ("pretrain", "shape"): 0.75}  # fmt: skip
    for (src, tgt), test in scores.items():
        cell = {"kind": "ft", "source": src, "target": tgt, "sparsity": 0.5, "seed": 0}
        _write(tmp_path, bench, cell, test=test, seconds=2.0)
    _write(
        tmp_path, bench, {"kind": "rp", "target": "color", "sparsity": 0.5, "seed": 0}, test=0.2, seconds=2.0, threads=1
    )
    summary = bench.report(args, tmp_path)
    rel = summary["matrices"]["0.5"]["relative"]
    assert rel["color"] == {"color": 1.0, "shape": 0.5}
    assert rel["shape"]["color"] == pytest.approx(0.75) and rel["pretrain"]["shape"] == pytest.approx(0.75)
    assert rel["rp"] == {"color": pytest.approx(0.25), "shape": None}  # the shape RP cell has not run
    assert summary["dense"]["color"]["mean"] == 0.9 and summary["seeds"] == [0]
    out = tmp_path / "out" / "transfer"
    text = out.with_suffix(".md").read_text()
    assert "| colour | 1.000 (80.0 ± 0.0) | 0.500 (50.0 ± 0.0) |" in text
    assert json.loads(out.with_suffix(".json").read_text())["cells"] == 10
    assert "torch threads per run [1, 'unknown']" in text  # one cell records its threads, the others none
    if importlib.util.find_spec("matplotlib") is not None:
        assert out.with_suffix(".png").stat().st_size > 0 and "![transfer matrix](transfer.png)" in text
