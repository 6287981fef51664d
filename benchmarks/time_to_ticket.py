"""Time to ticket: training steps until the final ticket is drawn, IMP vs early-bird rounds vs one-shot early-bird.

For every target sparsity and seed, three ways to the ticket at that sparsity (issue 18, "Measure"):

- ``imp``: IMP as the yaml configures it (every round a full ``steps_per_round`` fine-tune);
- ``eb``: the same IMP with early-bird rounds (``EarlyBird(every, threshold, window)``; validation every
  ``--val-every`` steps, where a converged round may end);
- ``oneshot``: one dense training stopped when the mask at the target has converged
  (``EarlyBird(..., one_shot=True)``), then that ticket trained once from θ0 (``LotteryTicketCallback(ticket=...)``).

Time to ticket = optimizer steps trained until the final ticket's mask is drawn: for IMP / ``eb`` the step at which
the second-to-last round ended (the last round trains the final ticket), for ``oneshot`` the step at which the dense
run stopped. Quality = the final ticket's TEST accuracy after its full fine-tune (``steps_per_round`` steps from θ0,
the last IMP round or the one-shot ticket's training). The goal of issue 18: >= 3x fewer steps at <= 1 point lower
test accuracy than IMP.

IMP cells of the results grid (``benchmarks/ticket_quality.py``, ``--reuse-imp CACHE``) are reused as ``imp`` where
their final sparsity equals the target (same yaml assumed: pass the grid's ``--config``).

Each finished cell is cached as ``<cache>/<cell>.json`` (resumable; several processes can share a cache, see
``grid.py``); the report goes to ``<out>.json`` / ``<out>.md``. Run (hours on 2 CPU cores)::

    python benchmarks/time_to_ticket.py --config examples/easy_vqa/imp.yaml --targets 0.7 --seeds 0 1 2

Smoke run on the toy model (seconds)::

    python benchmarks/time_to_ticket.py --config examples/toy/imp.yaml --steps-per-round 40 --every 5 \\
        --targets 0.75 --seeds 0 --cache /tmp/ttt --out /tmp/ttt/report
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grid import claimed_cells  # noqa: E402
from ticket_quality import build  # noqa: E402

from lightning_tickets import LotteryTicketCallback  # noqa: E402
from lightning_tickets.early_bird import EarlyBird  # noqa: E402
from lightning_tickets.fileio import atomic_write  # noqa: E402
from lightning_tickets.report import write_json_atomic  # noqa: E402

METHODS = ("imp", "eb", "oneshot")
LABELS = {"imp": "IMP", "eb": "IMP + early-bird rounds", "oneshot": "one-shot early-bird"}
#: the goal of issue 18
GOAL_SPEEDUP = 3.0
GOAL_MAX_DROP = 0.01


# ------------------------------------------------------------------------------------------------ report maths
def ticket_steps(method: str, rows: Sequence[dict[str, Any]]) -> int:
    """Optimizer steps trained until the final ticket's mask was drawn, from a run's ``summary.json`` rows.

    Example:
        >>> ticket_steps("imp", [{"step": 500}, {"step": 1000}, {"step": 1500}])
        1000
        >>> ticket_steps("oneshot", [{"step": 180}, {"step": 180}])
        180
    """
    if method == "oneshot":
        return int(rows[0]["step"])
    if len(rows) < 2:
        raise ValueError(f"a {method} run needs >= 2 finished rounds to have drawn a ticket, got {len(rows)}")
    return int(rows[-2]["step"])


def _mean_std(xs: Sequence[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def summarize(cells: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate cached cells (``method``, ``target``, ``seed``, ``ticket_steps``, ``test``) per target and method:
    mean ± std over seeds, the speed-up over IMP (ratio of mean steps) and the accuracy change (method - IMP, mean
    over seeds, in accuracy units), and whether the issue's goal is met (both measured on the same seeds' means).
    """
    table: dict[str, dict[str, Any]] = {}
    for target in sorted({c["target"] for c in cells}):
        row: dict[str, Any] = {}
        for m in METHODS:
            mine = [c for c in cells if c["target"] == target and c["method"] == m]
            if mine:
                row[m] = {
                    "steps": _mean_std([c["ticket_steps"] for c in mine]),
                    "test": _mean_std([c["test"] for c in mine]),
                    "seeds": sorted(c["seed"] for c in mine),
                }
        imp = row.get("imp")
        for m in ("eb", "oneshot"):
            if imp is None or m not in row:
                continue
            speedup = imp["steps"]["mean"] / max(1e-12, row[m]["steps"]["mean"])
            delta = row[m]["test"]["mean"] - imp["test"]["mean"]
            row[m].update(
                speedup=speedup,
                test_delta=delta,
                goal_met=bool(speedup >= GOAL_SPEEDUP and delta >= -GOAL_MAX_DROP - 1e-12),
            )
        table[f"{target:g}"] = row
    return {"table": table, "goal": {"speedup": GOAL_SPEEDUP, "max_test_drop": GOAL_MAX_DROP}}


def _fmt(cell: dict[str, float], scale: float = 1.0, digits: int = 0) -> str:
    return f"{scale * cell['mean']:.{digits}f} ± {scale * cell['std']:.{digits}f} (n={cell['n']})"


def markdown(summary: dict[str, Any], command: str, machine: str = "") -> str:
    """The report page (docs/results/time_to_ticket.md)."""
    lines = [
        "# Time to ticket: IMP vs early-bird rounds vs one-shot early-bird",
        "",
        "Generated by `benchmarks/time_to_ticket.py` — do not edit by hand. Command:",
        "",
        f"    {command}",
        "",
        (f"Machine: {machine}. " if machine else "")
        + "Steps = optimizer steps trained until the final ticket's mask was drawn; test = the final ticket's test "
        "accuracy (%) after its full fine-tune from θ0; mean ± std over seeds. Goal (issue 18): "
        f">= {GOAL_SPEEDUP:g}x fewer steps than IMP at <= {100 * GOAL_MAX_DROP:g} point lower test accuracy.",
        "",
        "| target | method | steps to ticket | speed-up | test accuracy | vs IMP | goal |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for target, row in summary["table"].items():
        for m in METHODS:
            if m not in row:
                continue
            c = row[m]
            speed = f"{c['speedup']:.2f}x" if "speedup" in c else "—"
            delta = f"{100 * c['test_delta']:+.1f}" if "test_delta" in c else "—"
            goal = ("met" if c["goal_met"] else "missed") if "goal_met" in c else "—"
            lines.append(
                f"| {100 * float(target):.0f}% | {LABELS[m]} | {_fmt(c['steps'])} | {speed} | "
                f"{_fmt(c['test'], 100, 1)} | {delta} | {goal} |"
            )
    return "\n".join(lines) + "\n"


def imp_cell_from_grid(path: Path, target: float) -> dict[str, Any] | None:
    """An ``imp`` cell from a results-grid IMP cell (``ticket_quality.py``'s ``imp-seedN.json``: full rounds of
    ``steps_per_round`` steps, test accuracy per round), or ``None`` when its final sparsity is not ``target``."""
    cell = json.loads(Path(path).read_text())
    rows = cell["rows"]
    if len(rows) < 2 or abs(rows[-1]["sparsity"] - target) > 1e-3:
        return None
    steps = int(cell["steps_per_round"])
    return {"method": "imp", "target": target, "seed": cell["seed"], "ticket_steps": steps * (len(rows) - 1),
            "test": rows[-1]["test"], "rounds": rows, "source": str(path)}  # fmt: skip


# ------------------------------------------------------------------------------------------------ training
@torch.no_grad()
def test_score(model: L.LightningModule, loader) -> float:
    """Test accuracy: VQA score of the argmax answer for dict batches (easy-VQA), plain accuracy for ``(x, y)``."""
    was = model.training
    model.eval()
    hit = total = 0.0
    for batch in loader:
        if isinstance(batch, dict):
            batch = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            pred = model(batch).argmax(-1)
            hit += float(batch["targets"].gather(1, pred[:, None]).sum())
        else:
            x, y = (t.to(model.device) for t in batch)
            pred = model(x).argmax(-1)
            hit += float((pred == y).sum())
        total += len(pred)
    model.train(was)
    return hit / max(1.0, total)


def _fit(model, dm, callbacks, max_steps: int, val_every: int, precision: str) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, val_check_interval=val_every, check_val_every_n_epoch=None,
        precision=precision, max_steps=max_steps, callbacks=callbacks,
    )  # fmt: skip
    trainer.fit(model, dm)
    return trainer


def run_cell(cell: dict[str, Any], args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    method, seed, target = cell["method"], cell["seed"], cell["target"]
    model, dm, cb_args, cli = build(args.config, seed)
    dm.setup("fit")
    dm.setup("test")
    steps = args.steps_per_round or int(cb_args["steps_per_round"])
    precision = str(cli.config.trainer.get("precision") or "32-true")
    run_dir = cache / cell["name"]
    cb_args.update(steps_per_round=steps, epochs_per_round=None, target_sparsity=target, overwrite=True, plot=False,
                   ticket_dir=str(run_dir / "tickets"))  # fmt: skip
    if isinstance(cb_args.get("schedule"), list):
        cb_args["schedule"] = [s for s in cb_args["schedule"] if s < target] + [target]
    eb = EarlyBird(every=args.every, threshold=args.threshold, window=args.window, one_shot=method == "oneshot")
    t0 = time.time()
    cb = LotteryTicketCallback(**{**cb_args, "early_bird": None if method == "imp" else eb})
    val_every = steps if method == "imp" else args.val_every or args.every
    _fit(model, dm, [cb], steps * cb.num_rounds, val_every, precision)
    rows = cb.results
    trained = rows[-1]["step"]
    if method == "oneshot":  # train the drawn ticket once, from θ0 (the same seed's fresh model)
        model, dm, _, _ = build(args.config, seed)
        dm.setup("fit")
        dm.setup("test")
        ticket = str(run_dir / "tickets" / rows[1]["ticket"])
        fixed = LotteryTicketCallback(
            ticket=ticket, monitor=cb_args.get("monitor"), ticket_dir=str(run_dir / "fixed"), overwrite=True, plot=False
        )
        _fit(model, dm, [fixed], steps, steps, precision)
        trained += steps
    result = {
        **cell,
        "ticket_steps": ticket_steps(method, rows),
        "trained_steps": trained,
        "test": test_score(model, dm.test_dataloader()),
        "rounds": rows,
        "steps_per_round": steps,
        "early_bird": None if method == "imp" else asdict(eb),
        "seconds": time.time() - t0,
        "threads": torch.get_num_threads(),
    }
    write_json_atomic(cache / f"{cell['name']}.json", result)
    print(f"  {cell['name']}: ticket after {result['ticket_steps']} steps, test {result['test']:.4f}", flush=True)
    return result


def cells_for(args: argparse.Namespace) -> list[dict[str, Any]]:
    return [
        {"name": f"{m}-t{t:g}-seed{s}", "method": m, "target": t, "seed": s}
        for t in args.targets
        for s in args.seeds
        for m in args.methods
    ]


def report(args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    cells = [json.loads(p.read_text()) for p in sorted(cache.glob("*.json"))]
    summary = summarize(cells)
    summary.update(
        config=args.config,
        machine=f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        early_bird={"every": args.every, "threshold": args.threshold, "window": args.window},
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out.with_suffix(".json"), summary)
    command = "python benchmarks/time_to_ticket.py " + " ".join(sys.argv[1:])
    text = markdown(summary, command, summary["machine"])
    with atomic_write(out.with_suffix(".md"), binary=False) as f:
        f.write(text)
    print(text)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="examples/easy_vqa/imp.yaml")
    p.add_argument("--targets", type=float, nargs="+", default=[0.7], help="target sparsities (frontier, 0.7)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--steps-per-round", type=int, default=None, help="override the yaml's steps_per_round")
    p.add_argument("--every", type=int, default=25, help="early-bird: steps between mask checks")
    p.add_argument("--threshold", type=float, default=0.02, help="early-bird: distance threshold")
    p.add_argument("--window", type=int, default=3, help="early-bird: consecutive checks below the threshold")
    p.add_argument("--val-every", type=int, default=None, help="validation interval of early-bird runs (= every)")
    p.add_argument("--reuse-imp", default=None, help="a ticket_quality.py cache: reuse its IMP cells as 'imp'")
    p.add_argument("--cache", default="runs/time_to_ticket")
    p.add_argument("--out", default="docs/results/time_to_ticket")
    p.add_argument("--max-cells", type=int, default=None)
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    if args.reuse_imp:
        for t in args.targets:
            for s in args.seeds:
                name, src = f"imp-t{t:g}-seed{s}", Path(args.reuse_imp) / f"imp-seed{s}.json"
                cell = imp_cell_from_grid(src, t) if src.exists() else None
                if cell is not None and not (cache / f"{name}.json").exists():
                    write_json_atomic(cache / f"{name}.json", {**cell, "name": name})
    if not args.report_only:
        for cell in claimed_cells(lambda: cells_for(args), cache, name=lambda c: c["name"], max_cells=args.max_cells):
            run_cell(cell, args, cache)
    summary = report(args, cache)
    return 0 if summary["table"] else 1


if __name__ == "__main__":
    sys.exit(main())
