"""Run reports: ``summary.json``, the per-round table and the score-vs-sparsity plot.

Example:
    >>> rows = [{"round": 0, "sparsity": 0.0, "score": 0.80}, {"round": 1, "sparsity": 0.5, "score": 0.795},
    ...         {"round": 2, "sparsity": 0.7, "score": 0.70}]
    >>> best_relaxed_ticket(rows, dense_score=0.80, tolerance=0.99, mode="max")["round"]
    1
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_tickets.fileio import atomic_write


def keeps_score(score: float | None, dense_score: float | None, tolerance: float, mode: str) -> bool:
    """Whether ``score`` keeps ``tolerance`` of the dense score.

    ``mode="max"``: ``score >= tolerance * dense``; ``mode="min"`` (e.g. a loss): ``score <= dense / tolerance``.
    """
    if score is None or dense_score is None or math.isnan(score) or math.isnan(dense_score):
        return False
    if mode == "max":
        return score >= tolerance * dense_score
    return score <= dense_score / tolerance


def relative_score(score: float | None, dense_score: float | None) -> float | None:
    """``score / dense_score`` (None when either is missing or the dense score is 0)."""
    if score is None or dense_score in (None, 0):
        return None
    return score / dense_score


def best_relaxed_ticket(
    rows: Sequence[dict[str, Any]], dense_score: float | None, tolerance: float, mode: str
) -> dict[str, Any] | None:
    """The pruned round with the highest sparsity whose score keeps ``tolerance`` of dense (None if none does)."""
    winners = [r for r in rows if r["sparsity"] > 0 and keeps_score(r.get("score"), dense_score, tolerance, mode)]
    return max(winners, key=lambda r: r["sparsity"]) if winners else None


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write JSON through a temporary file in the same directory, fsync, then rename
    (:func:`lightning_tickets.fileio.atomic_write`); the file's mode follows the umask like any new file."""
    path = Path(path)
    with atomic_write(path, binary=False) as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
    return path


def format_table(
    rows: Sequence[dict[str, Any]], monitor: str | None, dense_score: float | None, tolerance: float, mode: str
) -> str:
    """Plain-text per-round table (round, sparsity, score, score/dense, relaxed winning ticket marker)."""
    name = monitor or "score"
    lines = [f"{'round':>5}  {'sparsity':>8}  {name:>14}  {'/dense':>7}  {'kept ' + format(tolerance, '.0%'):>9}"]
    for r in rows:
        score = r.get("score")
        rel = relative_score(score, dense_score)
        ok = "dense" if r["round"] == 0 else ("yes" if keeps_score(score, dense_score, tolerance, mode) else "no")
        lines.append(
            f"{r['round']:>5}  {r['sparsity']:>8.2%}  {'-' if score is None else format(score, '.4f'):>14}  "
            f"{'-' if rel is None else format(rel, '.3f'):>7}  {ok:>9}"
        )
    return "\n".join(lines)


def summary_figure(summaries: Sequence[dict[str, Any]], labels: Sequence[str] | None = None) -> Any:
    """Score vs sparsity of one or more ``summary.json`` dicts (dense line, tolerance line, winner marked), as a
    :class:`matplotlib.figure.Figure` built with the object API: pyplot and the user's backend are never touched.

    Example:
        >>> summary = {"monitor": "val/acc", "dense_score": 0.8, "rounds": [{"sparsity": 0.0, "score": 0.8},
        ...            {"sparsity": 0.5, "score": 0.79}], "best_relaxed_ticket": {"sparsity": 0.5, "score": 0.79}}
        >>> summary_figure([summary]).axes[0].get_ylabel()
        'val/acc'

    Raises:
        ImportError: if matplotlib is missing (install ``lightning-tickets[demo]``).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'lightning-tickets[demo]'") from err
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for i, summary in enumerate(summaries):
        rows = [r for r in summary["rounds"] if r.get("score") is not None]
        label = labels[i] if labels else summary.get("label", summary.get("method", f"run {i}"))
        xs = [100 * r["sparsity"] for r in rows]
        ys = [r["score"] for r in rows]
        (line,) = ax.plot(xs, ys, marker="o", label=label)
        dense = summary.get("dense_score")
        if dense is not None and i == 0:
            ax.axhline(dense, color="gray", linestyle="--", linewidth=1, label="dense")
            tol = summary.get("tolerance", 0.99)
            target = dense * tol if summary.get("mode", "max") == "max" else dense / tol
            ax.axhline(target, color="gray", linestyle=":", linewidth=1, label=f"{tol:.0%} of dense")
        best = summary.get("best_relaxed_ticket")
        if best is not None:
            ax.plot(
                [100 * best["sparsity"]],
                [best["score"]],
                marker="*",
                markersize=16,
                color=line.get_color(),
                linestyle="none",
                label=f"relaxed winning ticket ({best['sparsity']:.0%})",
            )
    ax.set_xlabel("sparsity of the pruned scope (%)")
    ax.set_ylabel(summaries[0].get("monitor") or "score")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Write a matplotlib figure as PNG through :func:`~lightning_tickets.fileio.atomic_write`."""
    path = Path(path)
    with atomic_write(path) as f:
        fig.savefig(f, dpi=dpi, format="png")
    return path


def plot_summary(summaries: Sequence[dict[str, Any]], path: str | Path, labels: Sequence[str] | None = None) -> Path:
    """Write :func:`summary_figure` of one or more ``summary.json`` dicts as a PNG at ``path``.

    Raises:
        ImportError: if matplotlib is missing (install ``lightning-tickets[demo]``).
    """
    return save_figure(summary_figure(summaries, labels), path)
