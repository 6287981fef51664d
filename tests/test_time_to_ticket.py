"""benchmarks/time_to_ticket.py: the report maths on hand-made cells (no training)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def ttt(load_benchmark):
    return load_benchmark("time_to_ticket")


def test_ticket_steps_is_the_step_the_final_mask_was_drawn(ttt):
    rows = [{"round": 0, "step": 180}, {"round": 1, "step": 300}, {"round": 2, "step": 800}]
    assert ttt.ticket_steps("imp", rows) == 300  # the last round trains the final ticket: not counted
    assert ttt.ticket_steps("eb", rows) == 300
    assert ttt.ticket_steps("oneshot", [{"step": 180}, {"step": 180}]) == 180
    with pytest.raises(ValueError, match="needs >= 2 finished rounds"):
        ttt.ticket_steps("imp", rows[:1])


def _cells(method, steps, tests, target=0.7):
    return [{"method": method, "target": target, "seed": s, "ticket_steps": n, "test": t}
            for s, (n, t) in enumerate(zip(steps, tests))]  # fmt: skip


def test_summary_speedup_delta_and_goal(ttt):
    cells = (
        _cells("imp", [1500, 1500, 1500], [0.90, 0.92, 0.94])
        + _cells("eb", [400, 500, 600], [0.91, 0.915, 0.92])  # 3.0x, -0.5 point: goal met (both limits inclusive)
        + _cells("oneshot", [300, 350], [0.89, 0.90])  # 1500 / 325 = 4.615x but -2.5 points: missed
        + _cells("eb", [1000], [0.5], target=0.9)  # no IMP at 90 %: no comparison
    )
    table = ttt.summarize(cells)["table"]
    imp, eb, one = table["0.7"]["imp"], table["0.7"]["eb"], table["0.7"]["oneshot"]
    assert imp["steps"] == {"mean": 1500, "std": 0.0, "n": 3}
    assert imp["test"]["mean"] == pytest.approx(0.92) and imp["test"]["std"] == pytest.approx(0.02)
    assert eb["steps"]["mean"] == 500 and eb["steps"]["std"] == pytest.approx(100.0)
    assert eb["speedup"] == pytest.approx(3.0) and eb["test_delta"] == pytest.approx(-0.005) and eb["goal_met"]
    assert one["speedup"] == pytest.approx(1500 / 325) and one["test_delta"] == pytest.approx(-0.025)
    assert not one["goal_met"] and one["seeds"] == [0, 1]
    assert "speedup" not in table["0.9"]["eb"]


def test_markdown_rows(ttt):
    cells = _cells("imp", [1500, 1500], [0.90, 0.92]) + _cells("eb", [300, 700], [0.905, 0.905])
    text = ttt.markdown(ttt.summarize(cells), "python benchmarks/time_to_ticket.py --seeds 0 1")
    assert "| 70% | IMP | 1500 ± 0 (n=2) | — | 91.0 ± 1.4 (n=2) | — | — |" in text
    assert "| 70% | IMP + early-bird rounds | 500 ± 283 (n=2) | 3.00x | 90.5 ± 0.0 (n=2) | -0.5 | met |" in text


def test_imp_cells_of_the_results_grid_are_reused_only_at_their_target(ttt, tmp_path):
    rows = [{"round": r, "sparsity": s, "val": 0.9, "test": t} for r, (s, t) in
            enumerate([(0.0, 0.95), (0.334, 0.94), (0.556, 0.93), (0.7, 0.92)])]  # fmt: skip
    path = tmp_path / "imp-seed2.json"
    path.write_text(json.dumps({"name": "imp-seed2", "method": "imp", "seed": 2, "rows": rows, "steps_per_round": 500}))
    cell = ttt.imp_cell_from_grid(path, 0.7)
    assert (cell["method"], cell["seed"], cell["ticket_steps"], cell["test"]) == ("imp", 2, 1500, 0.92)
    assert ttt.imp_cell_from_grid(path, 0.9) is None
