"""Direct tests of :mod:`lightning_tickets.ticket_dir`: preparing, checking and writing a run's ticket directory."""

from __future__ import annotations

import json
import os

import pytest
import torch

from lightning_tickets.__about__ import __version__
from lightning_tickets.state import RunState
from lightning_tickets.ticket import Ticket
from lightning_tickets.ticket_dir import TicketDir, build_summary


class EchoStrategy:
    """One process: ``broadcast(x)`` returns ``x`` (what rank 0 decided is what every rank gets)."""

    def __init__(self) -> None:
        self.calls = []

    def broadcast(self, obj, src=0):
        self.calls.append(obj)
        return obj


class Rank0Says:
    """A non-zero rank: ``broadcast`` returns rank 0's decision, whatever this rank passed."""

    def __init__(self, decision) -> None:
        self.decision = decision

    def broadcast(self, obj, src=0):
        assert obj is None  # a non-zero rank checks nothing itself
        return self.decision


def _prepare(d: TicketDir, run_id: str = "run-a", resuming_rounds: int | None = None) -> EchoStrategy:
    strategy = EchoStrategy()
    d.prepare(strategy, True, run_id, resuming_rounds)
    return strategy


def _names(path):
    return sorted(p.name for p in path.iterdir())


# -- a fresh run
def test_absent_and_empty_directories_are_used(tmp_path):
    d = TicketDir(tmp_path / "a" / "tickets")
    strategy = _prepare(d)
    assert d.path.is_dir() and strategy.calls == [None]
    _prepare(TicketDir(d.path))  # empty: fine


def test_non_empty_directory_is_refused_and_left_alone(tmp_path):
    (tmp_path / "round-00.safetensors").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("mine")
    strategy = EchoStrategy()
    with pytest.raises(FileExistsError) as err:
        TicketDir(tmp_path).prepare(strategy, True, "run-a", None)
    msg = str(err.value)
    assert f"ticket_dir={str(tmp_path)!r} is not empty" in msg and "nothing was overwritten" in msg
    assert "overwrite=True" in msg and "ckpt_path" in msg
    assert strategy.calls == [msg]  # rank 0's refusal is what every rank gets
    assert _names(tmp_path) == ["notes.txt", "round-00.safetensors"]
    assert (tmp_path / "round-00.safetensors").read_bytes() == b"old"


def test_overwrite_removes_only_the_runs_own_files(tmp_path):
    own = [
        "round-00.safetensors",
        "round-12.safetensors",
        "summary.json",
        "summary.png",
        ".round-03.safetensors.0123abcd.tmp",
        ".summary.json.deadbeef.tmp",
    ]
    others = ["notes.txt", "round-00.ckpt", "summary.json.bak", "my.safetensors", ".hidden"]
    for name in own + others:
        (tmp_path / name).write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "round-00.safetensors").write_text("x")  # not at the top level: kept
    _prepare(TicketDir(tmp_path, overwrite=True))
    assert _names(tmp_path) == sorted([*others, "sub"])
    assert _names(tmp_path / "sub") == ["round-00.safetensors"]


@pytest.mark.parametrize("path", ["", "."])
def test_working_directory_is_refused(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileExistsError, match=r"ticket_dir='\.' is the working directory; give a dedicated directory"):
        _prepare(TicketDir(path, overwrite=True))


def test_a_file_is_refused(tmp_path):
    f = tmp_path / "tickets"
    f.write_text("x")
    with pytest.raises(FileExistsError, match="exists and is not a directory"):
        _prepare(TicketDir(f, overwrite=True))
    assert f.read_text() == "x"


def test_non_zero_rank_follows_rank0(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    d = TicketDir(tmp_path / "absent")
    d.prepare(Rank0Says(None), False, "run-a", None)  # rank 0 accepted: nothing to check or create here
    assert not d.path.exists()
    with pytest.raises(FileExistsError, match="^rank 0 refused$"):
        TicketDir(tmp_path).prepare(Rank0Says("rank 0 refused"), False, "run-a", None)


# -- a resumed run
def _finished_run(path, run_id="run-a", rounds=2):
    d = TicketDir(path)
    for r in range(rounds):
        d.write_round(r, {"w": torch.tensor([True, r == 0])}, {"round": r})
    d.write_summary({"run_id": run_id, "rounds": []})
    return d


def test_resume_into_its_own_directory(tmp_path):
    _finished_run(tmp_path)
    _prepare(TicketDir(tmp_path), "run-a", resuming_rounds=2)
    _prepare(TicketDir(tmp_path), "run-a", resuming_rounds=1)
    assert _names(tmp_path) == ["round-00.safetensors", "round-01.safetensors", "summary.json"]  # nothing removed


def test_resume_from_round_zero_into_a_fresh_directory(tmp_path):
    d = TicketDir(tmp_path / "new")
    _prepare(d, "run-a", resuming_rounds=0)
    assert d.path.is_dir()


def test_resume_into_another_runs_directory_is_refused(tmp_path):
    _finished_run(tmp_path, run_id="run-b")
    for rounds in (0, 2):
        with pytest.raises(FileExistsError) as err:
            _prepare(TicketDir(tmp_path), "run-a", resuming_rounds=rounds)
        assert "belongs to run run-b, but the checkpoint is from run run-a" in str(err.value)
        assert "nothing was overwritten" in str(err.value)


@pytest.mark.parametrize("setup", ["absent", "empty", "no summary", "corrupt summary"])
def test_resume_without_the_runs_summary_is_refused(tmp_path, setup):
    path = tmp_path / "t"
    if setup != "absent":
        path.mkdir()
    if setup == "no summary":
        (path / "round-00.safetensors").write_text("x")
    if setup == "corrupt summary":
        (path / "summary.json").write_text("{not json")
    with pytest.raises(FileExistsError) as err:
        _prepare(TicketDir(path), "run-a", resuming_rounds=1)
    assert "resuming run run-a" in str(err.value) and "holds no summary.json of that run" in str(err.value)
    assert "its 1 finished round(s) would be missing" in str(err.value)


def test_resume_with_missing_round_tickets_is_refused(tmp_path):
    _finished_run(tmp_path, rounds=3)
    os.remove(tmp_path / "round-01.safetensors")
    with pytest.raises(FileExistsError, match=r"lacks the tickets \['round-01.safetensors'\] of run run-a"):
        _prepare(TicketDir(tmp_path), "run-a", resuming_rounds=3)
    _prepare(TicketDir(tmp_path), "run-a", resuming_rounds=1)  # round 0 is all that run had finished


def test_resume_of_a_checkpoint_without_run_id_is_not_compared(tmp_path):
    _finished_run(tmp_path, run_id="run-b")
    _prepare(TicketDir(tmp_path), "", resuming_rounds=2)


# -- writing
def test_write_round_and_summary(tmp_path):
    d = TicketDir(tmp_path / "t")
    masks = {"a.weight": torch.tensor([[True, False], [False, False]]), "b": torch.tensor([True, True, False])}
    path = d.write_round(3, masks, {"round": 3, "score": 0.5})
    assert path == tmp_path / "t" / "round-03.safetensors" == d.round_path(3)
    ticket = Ticket.load(path)
    assert ticket.masks.keys() == masks.keys() and all(torch.equal(ticket.masks[n], masks[n]) for n in masks)
    assert ticket.metadata["round"] == 3 and ticket.metadata["score"] == 0.5
    summary = {"run_id": "run-a", "rounds": [{"round": 0, "sparsity": 0.0}]}
    assert d.write_summary(summary) == d.summary_path == tmp_path / "t" / "summary.json"
    assert json.loads(d.summary_path.read_text()) == summary
    assert _names(d.path) == ["round-03.safetensors", "summary.json"]  # no temporary files left
    assert d.round_path(123).name == "round-123.safetensors"


INFO = {"monitor": "val/acc", "mode": "max", "tolerance": 0.99, "schedule": "geometric"}
ROWS = [
    {"round": 0, "sparsity": 0.0, "score": 0.80, "ticket": "round-00.safetensors"},
    {"round": 1, "sparsity": 0.2, "score": 0.799, "ticket": "round-01.safetensors"},
    {"round": 2, "sparsity": 0.36, "score": 0.70, "ticket": "round-02.safetensors"},
]


def test_build_summary():
    state = RunState(rows=ROWS, dense_score=0.8, finished=True, run_id="run-a")
    summary = build_summary(INFO, state)
    assert summary == {
        "library_version": __version__,
        "run_id": "run-a",
        **INFO,
        "dense_score": 0.8,
        "finished": True,
        "rounds": ROWS,
        "best_relaxed_ticket": ROWS[1],
    }
    assert list(summary)[:2] == ["library_version", "run_id"]
    assert build_summary({**INFO, "tolerance": 1.0}, state)["best_relaxed_ticket"] is None
    json.dumps(summary)  # serialisable as is


def test_report_text_without_plot(tmp_path):
    d = TicketDir(tmp_path)
    summary = build_summary(INFO, RunState(rows=ROWS, dense_score=0.8, run_id="run-a"))
    lines = d.report(summary, plot=False).splitlines()
    assert lines[:2] == ["", "[lightning-tickets] rounds:"]
    assert lines[2].split()[:3] == ["round", "sparsity", "val/acc"]
    assert [line.split()[0] for line in lines[3:6]] == ["0", "1", "2"]
    assert lines[6] == (
        f"relaxed winning ticket (>= 99% of dense): round 1 at 20.00% -> {tmp_path / 'round-01.safetensors'}"
    )
    assert lines[7] == f"summary: {tmp_path / 'summary.json'}"
    assert len(lines) == 8 and not (tmp_path / "summary.png").exists()


def test_report_without_a_winner_or_a_dense_score(tmp_path):
    d = TicketDir(tmp_path)
    summary = build_summary({**INFO, "tolerance": 1.0}, RunState(rows=ROWS, dense_score=0.8))
    assert "relaxed winning ticket (>= 100% of dense): none" in d.report(summary, plot=False)
    no_dense = build_summary(INFO, RunState(rows=ROWS, dense_score=None))
    assert "relaxed winning ticket" not in d.report(no_dense, plot=False)


def test_report_with_plot_writes_summary_png(tmp_path):
    pytest.importorskip("matplotlib")
    d = TicketDir(tmp_path)
    summary = build_summary(INFO, RunState(rows=ROWS, dense_score=0.8))
    text = d.report(summary, plot=True)
    assert text.splitlines()[-1] == f"plot: {tmp_path / 'summary.png'}"
    assert (tmp_path / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # no monitor: nothing to plot
    d2 = TicketDir(tmp_path / "b")
    assert not any(line.startswith("plot") for line in d2.report({**summary, "monitor": None}, plot=True).splitlines())
    assert not (tmp_path / "b" / "summary.png").exists()


def test_report_says_when_the_plot_is_skipped(tmp_path, monkeypatch):
    import sys

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] or ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # every import of matplotlib now raises ImportError
    summary = build_summary(INFO, RunState(rows=ROWS, dense_score=0.8))
    last = TicketDir(tmp_path).report(summary, plot=True).splitlines()[-1]
    assert last.startswith("plot skipped: ") and "pip install 'lightning-tickets[demo]'" in last
    assert not (tmp_path / "summary.png").exists()
