"""Results where users look: each round's score and the summary figure, sent to the Trainer's loggers.

:func:`log_round` is called at every round end (``tickets/round``, ``tickets/sparsity``, ``tickets/score``,
``tickets/relative`` and the best relaxed ticket so far, ``tickets/best_round`` / ``tickets/best_sparsity``) with
``logger.log_metrics(metrics, step=trainer.global_step)`` on global rank 0 (``LightningModule.log`` cannot be called
from the validation-end / epoch-end hooks where a round ends). :func:`log_figure` sends the end-of-run figure to the
loggers that take images, found by duck typing (no logger package is needed): TensorBoard's
``experiment.add_figure``, an MLflow client's ``experiment.log_figure``, or ``log_image`` (Weights & Biases).

Example:
    >>> class Recorder:  # any object with ``log_metrics`` works, as for Lightning's loggers
    ...     def __init__(self):
    ...         self.calls = []
    ...     def log_metrics(self, metrics, step):
    ...         self.calls.append((step, metrics))
    >>> rows = [{"round": 0, "sparsity": 0.0, "score": 0.8}, {"round": 1, "sparsity": 0.5, "score": 0.8}]
    >>> rec = Recorder()
    >>> metrics = round_metrics(rows, dense_score=0.8, tolerance=0.99, mode="max")
    >>> metrics["tickets/best_sparsity"], metrics["tickets/relative"]
    (0.5, 1.0)
    >>> send_metrics([rec], metrics, step=8)
    >>> rec.calls[0][0]
    8
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn

from lightning_tickets.report import best_relaxed_ticket, relative_score

__all__ = ["log_figure", "log_round", "round_metrics", "send_metrics"]

FIGURE_TAG = "tickets/summary"


def round_metrics(
    rows: Sequence[dict[str, Any]], dense_score: float | None, tolerance: float, mode: str
) -> dict[str, float]:
    """The metrics of the last finished round (``rows[-1]``) and the best relaxed ticket among ``rows``.

    A round without a score (``monitor=None`` or a NaN score) has no ``tickets/score`` / ``tickets/relative``; the
    best-ticket keys appear once some pruned round keeps ``tolerance`` of the dense score.
    """
    row = rows[-1]
    metrics = {"tickets/round": float(row["round"]), "tickets/sparsity": float(row["sparsity"])}
    if row.get("score") is not None:
        metrics["tickets/score"] = float(row["score"])
        rel = relative_score(row["score"], dense_score)
        if rel is not None:
            metrics["tickets/relative"] = float(rel)
    best = best_relaxed_ticket(rows, dense_score, tolerance, mode)
    if best is not None:
        metrics["tickets/best_round"] = float(best["round"])
        metrics["tickets/best_sparsity"] = float(best["sparsity"])
    return metrics


def send_metrics(loggers: Sequence[Any], metrics: dict[str, float], step: int) -> None:
    """``logger.log_metrics(metrics, step=step)`` for every logger."""
    for logger in loggers:
        logger.log_metrics(metrics, step=step)


def log_round(
    trainer: Any, rows: Sequence[dict[str, Any]], dense_score: float | None, tolerance: float, mode: str
) -> None:
    """Send :func:`round_metrics` to every logger of ``trainer`` (global rank 0 only), at ``trainer.global_step``."""
    if trainer.is_global_zero and trainer.loggers and rows:
        send_metrics(trainer.loggers, round_metrics(rows, dense_score, tolerance, mode), trainer.global_step)


def _rgba(fig: Any) -> Any:
    """The figure's pixels (H x W x 4 uint8 array), drawn on an Agg canvas of its own."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def log_figure(loggers: Sequence[Any], fig: Any, step: int, tag: str = FIGURE_TAG) -> list[str]:
    """Send a matplotlib figure to each logger that takes images; return the names of those that took it.

    TensorBoard (``experiment.add_figure``), MLflow (``experiment.log_figure(run_id, ...)``), and loggers with
    ``log_image(key, images, step)`` (Weights & Biases) take it; others (CSV) are skipped. A logger whose image call
    fails gets a warning naming it, and the run goes on (the figure is also in ``summary.png``).
    """
    sent = []
    for logger in loggers:
        experiment = getattr(logger, "experiment", None)
        try:
            if callable(getattr(experiment, "add_figure", None)):
                experiment.add_figure(tag, fig, global_step=step, close=False)
            elif callable(getattr(experiment, "log_figure", None)) and getattr(logger, "run_id", None):
                experiment.log_figure(logger.run_id, fig, f"{tag}.png")
            elif callable(getattr(logger, "log_image", None)):
                logger.log_image(key=tag, images=[_rgba(fig)], step=step)
            else:
                continue
        except Exception as err:  # a logger's own failure must not lose the end of the run
            rank_zero_warn(f"could not send the summary figure to {type(logger).__name__}: {err!r}")
            continue
        sent.append(type(logger).__name__)
    return sent
