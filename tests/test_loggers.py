"""Per-round results and the summary figure reach the Trainer's loggers; the user's matplotlib backend is untouched."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.loggers import CSVLogger, Logger

from lightning_tickets import LotteryTicketCallback
from lightning_tickets.cli import main
from lightning_tickets.loggers import log_figure, log_round, round_metrics
from lightning_tickets.toy import ToyClassifier, ToyDataModule

TOY_YAML = Path(__file__).resolve().parents[1] / "examples" / "toy" / "imp.yaml"
SMALL = {"num_samples": 256, "batch_size": 64}  # 4 batches per epoch


def _rows_with(path: Path, key: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get(key)]


def test_toy_yaml_with_csv_logger_has_one_row_per_round_with_the_score(tmp_path, monkeypatch):
    """The issue's "done when": examples/toy/imp.yaml with a CSVLogger shows one row per round with its score."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lightning-tickets"])
    main(
        [
            "fit",
            "--config",
            str(TOY_YAML),
            f"--trainer.default_root_dir={tmp_path / 'root'}",
            f"--trainer.callbacks.init_args.ticket_dir={tmp_path / 'tickets'}",
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--data.init_args.num_samples=128",
        ]
    )
    summary = json.loads((tmp_path / "tickets" / "summary.json").read_text())
    rows = _rows_with(next((tmp_path / "logs").rglob("metrics.csv")), "tickets/score")
    assert len(rows) == len(summary["rounds"]) == 5  # 0, 0.5, 0.75, 0.875, 0.9
    for logged, expected in zip(rows, summary["rounds"]):
        assert float(logged["tickets/round"]) == expected["round"]
        assert float(logged["tickets/sparsity"]) == pytest.approx(expected["sparsity"])
        assert float(logged["tickets/score"]) == pytest.approx(expected["score"])
        assert int(logged["step"]) == expected["step"]
        if expected["relative"] is not None:
            assert float(logged["tickets/relative"]) == pytest.approx(expected["relative"])


class RecordingLogger(Logger):
    """A Lightning logger that keeps every ``log_metrics`` call, and takes figures the way TensorBoard does."""

    def __init__(self):
        super().__init__()
        self.metrics: list[tuple[int, dict]] = []
        self.figures: list[tuple[str, object, int]] = []

    name = "recorder"
    version = 0

    @property
    def experiment(self):
        return self  # TensorBoardLogger.experiment is a SummaryWriter with ``add_figure``

    def add_figure(self, tag, figure, global_step=None, close=True):
        self.figures.append((tag, figure, global_step))

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def _fit(tmp_path, loggers, **kw):
    cb = LotteryTicketCallback(
        target_sparsity=0.75, rate=0.5, epochs_per_round=1, monitor="val/acc", ticket_dir=str(tmp_path / "t"), **kw
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=10,
        callbacks=[cb],
        logger=loggers,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(ToyClassifier(), ToyDataModule(**SMALL))
    return cb, trainer


def test_every_logger_gets_each_round_and_the_best_ticket_so_far(tmp_path):
    first, second = RecordingLogger(), RecordingLogger()
    cb, trainer = _fit(tmp_path, [first, second], plot=False)
    for rec in (first, second):
        per_round = [(s, m) for s, m in rec.metrics if "tickets/score" in m]
        assert [m["tickets/round"] for _, m in per_round] == [0.0, 1.0, 2.0]
        for (step, m), row in zip(per_round, cb.results):
            assert step == row["step"]
            assert m["tickets/score"] == pytest.approx(row["score"])
            assert m["tickets/sparsity"] == pytest.approx(row["sparsity"])
            # the oracle: the best relaxed ticket among the rounds finished so far
            so_far = cb.results[: row["round"] + 1]
            winners = [r for r in so_far[1:] if r["score"] >= 0.99 * so_far[0]["score"]]
            if winners:
                assert m["tickets/best_sparsity"] == pytest.approx(max(r["sparsity"] for r in winners))
            else:
                assert "tickets/best_sparsity" not in m
        assert rec.figures == []  # plot=False: no figure


def test_only_global_rank_zero_logs():
    from types import SimpleNamespace

    rec = RecordingLogger()
    rows = [{"round": 0, "sparsity": 0.0, "score": 0.5}]
    log_round(SimpleNamespace(is_global_zero=False, loggers=[rec], global_step=3), rows, 0.5, 0.99, "max")
    assert rec.metrics == []
    log_round(SimpleNamespace(is_global_zero=True, loggers=[rec], global_step=3), rows, 0.5, 0.99, "max")
    assert rec.metrics == [
        (3, {"tickets/round": 0.0, "tickets/sparsity": 0.0, "tickets/score": 0.5, "tickets/relative": 1.0})
    ]


def test_round_metrics_without_a_score_or_winner():
    rows = [{"round": 0, "sparsity": 0.0, "score": None}]
    assert round_metrics(rows, None, 0.99, "max") == {"tickets/round": 0.0, "tickets/sparsity": 0.0}
    rows = [{"round": 0, "sparsity": 0.0, "score": 2.0}, {"round": 1, "sparsity": 0.5, "score": 2.5}]
    m = round_metrics(rows, 2.0, 0.99, "min")  # a loss: 2.5 > 2.0 / 0.99, no winner
    assert m["tickets/relative"] == pytest.approx(1.25) and "tickets/best_round" not in m


def test_summary_figure_goes_to_image_loggers_and_backend_is_unchanged(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # a backend that is not Agg: the run must not switch it
    try:
        rec = RecordingLogger()
        csv_logger = CSVLogger(tmp_path, name="csv")
        _fit(tmp_path, [rec, csv_logger], plot=True)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    ((tag, fig, step),) = rec.figures
    assert tag == "tickets/summary" and isinstance(fig, Figure) and step > 0
    assert fig.axes[0].get_ylabel() == "val/acc"
    assert (tmp_path / "t" / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_log_figure_duck_types_mlflow_and_wandb_and_warns_on_failure():
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))
    fig.subplots().plot([0, 1], [1, 0])
    calls = []

    class MlflowClient:
        def log_figure(self, run_id, figure, artifact_file):
            calls.append(("mlflow", run_id, figure, artifact_file))

    class MLFlowLogger:
        experiment, run_id = MlflowClient(), "abc"

    class WandbLogger:
        experiment = object()

        def log_image(self, key, images, step=None):
            calls.append(("wandb", key, images[0].shape, step))

    class Broken:
        experiment = type("W", (), {"add_figure": lambda *a, **k: 1 / 0})()

    class Plain:  # CSV-like: no image API
        experiment = object()

    with pytest.warns(UserWarning, match="could not send the summary figure to Broken"):
        sent = log_figure([MLFlowLogger(), WandbLogger(), Broken(), Plain()], fig, step=7)
    assert sent == ["MLFlowLogger", "WandbLogger"]
    assert calls[0] == ("mlflow", "abc", fig, "tickets/summary.png")
    assert calls[1][0] == "wandb" and calls[1][2][2] == 4 and calls[1][3] == 7  # H x W x RGBA pixels
