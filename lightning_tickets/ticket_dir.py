"""The ticket directory of a run: preparing it, writing round tickets and ``summary.json``, the end-of-run report.

Only global rank 0 writes; every file goes through a temporary file + ``os.replace`` (:meth:`Ticket.save`,
:func:`~lightning_tickets.report.write_json_atomic`), so an interrupted run leaves each file complete or absent.
Decisions that every rank must share (may this directory be used?) are made on rank 0 and broadcast.

Example:
    >>> import tempfile
    >>> d = TicketDir(tempfile.mkdtemp(), overwrite=False)
    >>> d.summary_path.name
    'summary.json'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lightning_tickets.__about__ import __version__
from lightning_tickets.loggers import log_figure
from lightning_tickets.report import best_relaxed_ticket, format_table, save_figure, summary_figure, write_json_atomic
from lightning_tickets.ticket import Ticket
from lightning_tickets.ticket_format import plain_name

__all__ = ["TicketDir", "build_summary"]

#: Files a run owns in its ticket directory (removed by ``overwrite=True``), hidden temporary files included.
OWN_FILES = (
    "round-*.safetensors",
    "summary.json",
    "summary.png",
    ".round-*.tmp",
    ".summary.json.*.tmp",
    ".summary.png.*.tmp",
)


class TicketDir:
    """A run's ``ticket_dir``.

    Args:
        path: the directory (created on first use).
        overwrite: a non-empty directory from another run may be reused (its ticket files are removed first).
    """

    def __init__(self, path: str | Path, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = bool(overwrite)

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    def round_path(self, round_: int) -> Path:
        return self.path / f"round-{round_:02d}.safetensors"

    def _read_run_id(self) -> str | None:
        try:
            return json.loads(self.summary_path.read_text()).get("run_id")
        except (OSError, ValueError, AttributeError):
            return None

    def prepare(self, strategy: Any, is_global_zero: bool, run_id: str, resuming_rounds: int | None) -> None:
        """Check (rank 0) and broadcast whether this run may write here; clean a reused directory.

        A fresh run (``resuming_rounds=None``) needs an empty or absent directory, or ``overwrite=True``. A resumed
        run that already finished ``resuming_rounds`` rounds needs its own directory back: ``summary.json`` must carry
        the same ``run_id`` and its round tickets must be there (an empty or absent directory is refused, since the
        summary would list tickets that are not in it).

        Raises:
            FileExistsError: naming the directory and the fix.
        """
        error = None
        if is_global_zero:
            error = self._check(run_id, resuming_rounds)
            if error is None:
                self.path.mkdir(parents=True, exist_ok=True)
        error = strategy.broadcast(error)
        if error:
            raise FileExistsError(error)

    def _check(self, run_id: str, resuming_rounds: int | None) -> str | None:
        d = self.path
        if str(d) in ("", "."):
            return (
                f"ticket_dir={str(d)!r} is the working directory; give a dedicated directory, e.g. "
                "ticket_dir='runs/my_run/tickets'"
            )
        if d.exists() and not d.is_dir():
            return f"ticket_dir={str(d)!r} exists and is not a directory"
        if resuming_rounds is not None:
            return self._check_resume(run_id, resuming_rounds)
        if d.is_dir() and any(d.iterdir()):
            if not self.overwrite:
                return (
                    f"ticket_dir={str(d)!r} is not empty (a previous run's tickets?); nothing was overwritten. "
                    "Choose a new ticket_dir, pass overwrite=True to replace its tickets, or resume with "
                    "trainer.fit(..., ckpt_path=...)"
                )
            for pattern in OWN_FILES:
                for f in d.glob(pattern):
                    f.unlink()
        return None

    def _check_resume(self, run_id: str, rounds: int) -> str | None:
        if rounds == 0 and not self.summary_path.exists():
            return None  # nothing written yet by the interrupted run
        found = self._read_run_id()
        if not run_id:
            return None  # a checkpoint from before run ids: nothing to compare
        if found is None:
            return (
                f"resuming run {run_id} into ticket_dir={str(self.path)!r}, which holds no summary.json of that run "
                f"(its {rounds} finished round(s) would be missing). Resume with the run's own ticket_dir"
            )
        if found != run_id:
            return (
                f"ticket_dir={str(self.path)!r} belongs to run {found}, but the checkpoint is from run {run_id}; "
                "nothing was overwritten. Resume with the checkpoint's own ticket_dir"
            )
        missing = [self.round_path(r).name for r in range(rounds) if not self.round_path(r).exists()]
        if missing:
            return f"ticket_dir={str(self.path)!r} lacks the tickets {missing} of run {run_id}; cannot resume into it"
        return None

    def write_round(self, round_: int, masks: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
        """Save one round's ticket (call on global rank 0 only), named as the plain model's parameters (without
        ``torch.compile``'s ``_orig_mod.``)."""
        path = self.round_path(round_)
        Ticket({plain_name(n): m for n, m in masks.items()}, metadata).save(path)  # names of the uncompiled model
        return path

    def write_summary(self, summary: dict[str, Any]) -> Path:
        """(Re)write ``summary.json`` atomically (call on global rank 0 only)."""
        return write_json_atomic(self.summary_path, summary)

    def report(self, summary: dict[str, Any], plot: bool, trainer: Any = None) -> str:
        """The end-of-run text: the per-round table, the relaxed winning ticket, the files (and ``summary.png``).

        With ``plot`` and a ``trainer``, the figure is also sent to the trainer's loggers that take images (at its
        ``global_step``; see :func:`lightning_tickets.loggers.log_figure`)."""
        rows, monitor, dense = summary["rounds"], summary["monitor"], summary["dense_score"]
        tolerance, mode = summary["tolerance"], summary["mode"]
        lines = ["", "[lightning-tickets] rounds:", format_table(rows, monitor, dense, tolerance, mode)]
        if rows and monitor is not None and dense is not None:
            best = best_relaxed_ticket(rows, dense, tolerance, mode)
            where = f"round {best['round']} at {best['sparsity']:.2%} -> {self.path / best['ticket']}" if best else None
            lines.append(f"relaxed winning ticket (>= {tolerance:.0%} of dense): {where or 'none'}")
        lines.append(f"summary: {self.summary_path}")
        if plot and rows and monitor is not None:
            try:
                fig = summary_figure([summary])
                lines.append(f"plot: {save_figure(fig, self.path / 'summary.png')}")
                sent = log_figure(trainer.loggers, fig, trainer.global_step) if trainer is not None else []
                lines += [f"figure sent to: {', '.join(sent)}"] if sent else []
            except ImportError as err:
                lines.append(f"plot skipped: {err}")
        return "\n".join(lines)


def build_summary(info: dict[str, Any], state: Any) -> dict[str, Any]:
    """``summary.json``'s content: the run's settings (``info``: monitor, mode, tolerance, schedule, ...), its
    ``run_id``, one row per finished round and the relaxed winning ticket (the sparsest round keeping ``tolerance``
    of the dense score).

    Example:
        >>> from lightning_tickets.state import RunState
        >>> info = {"monitor": "val/acc", "mode": "max", "tolerance": 0.99}
        >>> rows = [{"round": 0, "sparsity": 0.0, "score": 0.8}, {"round": 1, "sparsity": 0.5, "score": 0.8}]
        >>> build_summary(info, RunState(rows=rows, dense_score=0.8))["best_relaxed_ticket"]["round"]
        1
    """
    best = best_relaxed_ticket(state.rows, state.dense_score, info["tolerance"], info["mode"])
    return {
        "library_version": __version__,
        "run_id": state.run_id,
        **info,
        "dense_score": state.dense_score,
        "finished": state.finished,
        "rounds": state.rows,
        "best_relaxed_ticket": best,
    }
