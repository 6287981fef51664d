"""benchmarks/grid.py: cells of a resumable grid claimed with lock files, so several processes can share one cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def grid():
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    import grid as mod

    return mod


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_claim_is_exclusive_and_released(grid, tmp_path):
    assert grid.try_claim(tmp_path, "a")
    assert (tmp_path / "a.lock").read_text() == str(os.getpid())
    (tmp_path / "b.lock").write_text("1")  # pid 1 is alive: another process holds b
    assert not grid.try_claim(tmp_path, "b")
    grid.release(tmp_path, "a")
    assert not (tmp_path / "a.lock").exists()
    assert (tmp_path / "b.lock").exists()  # someone else's claim is never dropped


def test_stale_lock_of_a_dead_process_is_taken_over(grid, tmp_path):
    (tmp_path / "a.lock").write_text(str(_dead_pid()))
    assert grid.try_claim(tmp_path, "a")
    assert (tmp_path / "a.lock").read_text() == str(os.getpid())


def test_claimed_cells_skips_finished_and_held_cells_and_releases(grid, tmp_path):
    cells = [{"name": n} for n in ("done", "held", "free1", "free2")]
    (tmp_path / "done.json").write_text("{}")
    (tmp_path / "held.lock").write_text("1")
    seen = []
    for cell in grid.claimed_cells(lambda: cells, tmp_path, name=lambda c: c["name"], poll_s=0.01, max_cells=2):
        assert (tmp_path / f"{cell['name']}.lock").read_text() == str(os.getpid())
        seen.append(cell["name"])
        (tmp_path / f"{cell['name']}.json").write_text("{}")
    assert seen == ["free1", "free2"]
    assert not (tmp_path / "free1.lock").exists() and not (tmp_path / "free2.lock").exists()


def test_lock_released_when_the_cell_fails(grid, tmp_path):
    with pytest.raises(RuntimeError):
        for _cell in grid.claimed_cells(lambda: [{"name": "x"}], tmp_path, name=lambda c: c["name"]):
            raise RuntimeError("boom")
    assert not (tmp_path / "x.lock").exists()


def test_two_processes_run_every_cell_exactly_once(tmp_path):
    """Two real processes over one cache, with cells unlocked by earlier cells (like controls after IMP)."""
    worker = textwrap.dedent(
        f"""
        import json, os, sys, time
        from pathlib import Path
        sys.path.insert(0, {str(ROOT / "benchmarks")!r})
        from grid import claimed_cells
        cache = Path(sys.argv[1])

        def todo():
            cells = [{{"name": f"base{{i}}"}} for i in range(3)]
            cells += [{{"name": f"ctl{{i}}"}} for i in range(3) if (cache / f"base{{i}}.json").exists()]
            return cells

        for cell in claimed_cells(todo, cache, name=lambda c: c["name"], poll_s=0.05):
            time.sleep(0.5)
            with open(cache / "runs.log", "a") as f:
                f.write(cell["name"] + "\\n")
            (cache / f"{{cell['name']}}.json").write_text(json.dumps({{"pid": os.getpid()}}))
        """
    )
    script = tmp_path / "worker.py"
    script.write_text(worker)
    cache = tmp_path / "cache"
    cache.mkdir()
    procs = [subprocess.Popen([sys.executable, str(script), str(cache)]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    runs = (cache / "runs.log").read_text().split()
    assert sorted(runs) == sorted([f"base{i}" for i in range(3)] + [f"ctl{i}" for i in range(3)])
    assert len({json.loads((cache / f"{n}.json").read_text())["pid"] for n in runs}) == 2  # both did work
    assert not list(cache.glob("*.lock"))


def test_no_wait_stops_when_everything_left_runs_elsewhere(grid, tmp_path):
    (tmp_path / "held.lock").write_text("1")
    cells = [{"name": "held"}]
    assert list(grid.claimed_cells(lambda: cells, tmp_path, name=lambda c: c["name"], wait=False)) == []
    assert (tmp_path / "held.lock").read_text() == "1"
