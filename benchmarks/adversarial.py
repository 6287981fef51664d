"""Adversarial (VILLA-style) vs standard lottery tickets on easy-VQA: same IMP schedule, same seeds, same budget.

For every seed and method, one IMP run with the yaml recipe (``examples/easy_vqa/imp.yaml``: MiniLM-initialised
UNITER-style model, dense round + 3 pruning rounds to 70 % sparsity, rewind to θ0 = the MiniLM weights), with the
TEST accuracy (VQA score) measured at the end of every round and the time of every training step:

* ``standard``: the recipe as is;
* ``adversarial``: the same recipe with ``model.init_args.adversarial`` set (:class:`AdversarialConfig`: PGD on the
  word embeddings and on the projected region features, symmetric-KL consistency term). Both methods prune to the
  same sparsities (the schedule does not depend on the scores) and train the same number of steps per round.

The grid is resumable: each finished run writes ``<cache>/<method>-seed<s>.json`` and is skipped on the next call.
Results go to ``<out>.json`` and ``<out>.md``: accuracy per sparsity (mean ± std over seeds), the relaxed winning
ticket of each method (sparsest round with mean >= 99 % of its own dense mean) and the median time per step.

Full run (2 seeds x 2 methods, as two one-thread processes sharing the grid; ~95 min on 2 idle cores, see
docs/adversarial.md for the measured cost)::

    for i in 1 2; do nice -n 10 python benchmarks/adversarial.py --seeds 0 1 --threads 1 & done; wait

Smoke run (a few steps per round, nothing written to docs/)::

    python benchmarks/adversarial.py --seeds 0 --steps-per-round 4 --target-sparsity 0.3 \\
        --max-test-questions 64 --cache /tmp/adv-smoke --out /tmp/adv-smoke/report

``--max-cells N`` stops after N new runs; ``--report-only`` rewrites the report from the cache.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from common import StepTimes
from grid import claimed_cells
from ticket_quality import TestAtRoundEnd, per_seed_table
from ticket_quality import build as build_seeded

from lightning_tickets import LotteryTicketCallback
from lightning_tickets.tasks.adversarial import AdversarialConfig

METHODS = ("standard", "adversarial")


def adversarial_config(args: argparse.Namespace) -> AdversarialConfig:
    return AdversarialConfig(
        steps=args.adv_steps,
        epsilon={"text": args.epsilon_text, "image": args.epsilon_image},
        norm=args.norm,
        kl_weight=args.kl_weight,
    )


def build(args: argparse.Namespace, method: str, seed: int) -> tuple[Any, Any, dict, Any]:
    """Model + datamodule from the yaml, seeded with ``seed`` (as the easy-VQA grid's IMP runs), with the method's
    ``adversarial`` argument set through the CLI."""
    extra = []
    if method == "adversarial":
        cfg = adversarial_config(args)
        extra.append(f"--model.init_args.adversarial={json.dumps(cfg.__dict__ | {'modalities': list(cfg.modalities)})}")
    if args.batch_size is not None:
        extra.append(f"--data.init_args.batch_size={args.batch_size}")
    if args.max_test_questions is not None:
        extra.append(f"--data.init_args.max_test_questions={args.max_test_questions}")
    return build_seeded(args.config, seed, extra)


def run_cell(cell: dict, args: argparse.Namespace, cache: Path) -> dict:
    method, seed = cell["method"], cell["seed"]
    model, dm, cb_args, cli = build(args, method, seed)
    dm.setup("fit")
    dm.setup("test")
    if args.steps_per_round is not None:
        cb_args["steps_per_round"] = args.steps_per_round
    if args.target_sparsity is not None:
        cb_args["target_sparsity"] = args.target_sparsity
    steps = int(cb_args["steps_per_round"])
    cb_args.update(ticket_dir=str(cache / cell["name"] / "tickets"), overwrite=True, plot=False)
    cb = LotteryTicketCallback(**cb_args)
    probe = TestAtRoundEnd(cb, dm.test_dataloader())
    total = steps * cb.num_rounds
    timer = StepTimes(warmup=min(3, max(0, total - 2)), name=cell["name"], total=total, progress_every=100)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=total,
        callbacks=[timer.start, cb, probe, timer.end],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        val_check_interval=steps,
        check_val_every_n_epoch=None,
        precision=cli.config.trainer.get("precision") or "32-true",
    )
    t0 = time.time()
    trainer.fit(model, dm)
    result = {
        **cell,
        "rows": probe.rows,
        "seconds": time.time() - t0,
        "steps": trainer.global_step,
        "steps_per_round": steps,
        "batch_size": dm.batch_size if hasattr(dm, "batch_size") else None,
        "step_seconds_median": statistics.median(timer.times) if timer.times else None,
        "step_seconds_mean": statistics.fmean(timer.times) if timer.times else None,
        "threads": torch.get_num_threads(),
        "command": _command(args),
        "adversarial": adversarial_config(args).__dict__ if method == "adversarial" else None,
    }
    (cache / f"{cell['name']}.json").write_text(json.dumps(result, indent=2, default=list))
    print(
        f"  {cell['name']}: {result['steps']} steps, {result['seconds']:.0f} s, "
        f"{result['step_seconds_median']:.3f} s/step (median)",
        flush=True,
    )
    return result


def _mean_std(xs: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces the grid (the options that shape the runs)."""
    parts = [f"python benchmarks/adversarial.py --config {args.config} --seeds {' '.join(map(str, args.seeds))}"]
    if list(args.methods) != list(METHODS):
        parts.append(f"--methods {' '.join(args.methods)}")
    for flag in ("adv_steps", "epsilon_text", "epsilon_image", "norm", "kl_weight", "steps_per_round",
                 "target_sparsity", "batch_size", "max_test_questions", "threads"):  # fmt: skip
        value = getattr(args, flag)
        if value is not None:
            parts.append(f"--{flag.replace('_', '-')} {value}")
    return " ".join(parts)


def report(args: argparse.Namespace, cache: Path, verbose: bool = True) -> dict:
    """Summarise the finished runs in ``cache`` into ``<out>.json`` and ``<out>.md``; ``{}`` when none has finished."""
    results = [json.loads(p.read_text()) for p in sorted(cache.glob("*.json"))]
    results = [r for r in results if r.get("method") in METHODS]
    if not results:
        print("no finished run yet")
        return {}
    settings = {json.dumps(r["adversarial"], sort_keys=True) for r in results if r.get("adversarial")}
    rounds = {r["steps_per_round"] for r in results}
    if len(settings) > 1 or len(rounds) > 1:
        raise SystemExit(
            f"{cache} mixes runs with different settings (adversarial {sorted(settings)}, steps per round "
            f"{sorted(rounds)}): give each setting its own --cache and --out"
        )
    adv = json.loads(settings.pop()) if settings else None
    by: dict[str, dict[float, list[float]]] = {m: {} for m in METHODS}
    by_type: dict[str, dict[float, dict[str, list[float]]]] = {m: {} for m in METHODS}
    per_seed: dict[str, dict[str, dict[str, float]]] = {}
    step_times: dict[str, list[float]] = {m: [] for m in METHODS}
    for r in results:
        m = r["method"]
        for row in r["rows"]:
            s = round(row["sparsity"], 4)
            by[m].setdefault(s, []).append(row["test"])
            for t, acc in row.get("test_by_type", {}).items():
                by_type[m].setdefault(s, {}).setdefault(t, []).append(acc)
            per_seed.setdefault(str(r["seed"]), {}).setdefault(m, {})[str(s)] = row["test"]
        if r.get("step_seconds_median"):
            step_times[m].append(r["step_seconds_median"])
    sparsities = sorted({s for m in METHODS for s in by[m]})
    table = []
    for s in sparsities:
        row: dict[str, Any] = {"sparsity": s}
        for m in METHODS:
            if by[m].get(s):
                row[m] = _mean_std(by[m][s])
                row[m]["by_type"] = {t: statistics.fmean(v) for t, v in sorted(by_type[m].get(s, {}).items())}
        table.append(row)
    winners = {}
    for m in METHODS:
        dense = by[m].get(0.0)
        ok = [
            r["sparsity"]
            for r in table
            if r["sparsity"] > 0 and m in r and dense and r[m]["mean"] >= 0.99 * statistics.fmean(dense)
        ]
        winners[m] = max(ok) if ok else None
    timing = {m: statistics.median(step_times[m]) if step_times[m] else None for m in METHODS}
    ratio = timing["adversarial"] / timing["standard"] if all(timing.values()) else None
    summary = {
        "table": table,
        "relaxed_winning_sparsity": winners,
        "step_seconds_median": timing,
        "time_ratio": ratio,
        "adversarial": adv,
        "seeds": sorted({r["seed"] for r in results}),
        "runs": [r["name"] for r in results],
        "per_seed": {k: per_seed[k] for k in sorted(per_seed, key=int)},
        "steps_per_round": sorted(rounds),
        "threads_per_process": sorted({r["threads"] for r in results if r.get("threads")}),
        "cpu_minutes": round(sum(r["seconds"] * r.get("threads", 1) for r in results) / 60, 1),
        "config": args.config,
        "commands": sorted({r.get("command", "(not recorded)") for r in results}),
        "machine": f"{platform.machine()}, torch {torch.__version__}",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    _markdown(summary, out.with_suffix(".md"))
    if verbose:
        print(out.with_suffix(".md").read_text())
    return summary


def _fmt(cell: dict | None) -> str:
    return "—" if not cell else f"{100 * cell['mean']:.1f} ± {100 * cell['std']:.1f} (n={cell['n']})"


def _markdown(summary: dict, path: Path) -> None:
    t, ratio = summary["step_seconds_median"], summary["time_ratio"]
    lines = [
        "# Adversarial vs standard lottery tickets on easy-VQA (CPU)",
        "",
        "Generated by `benchmarks/adversarial.py` — do not edit by hand. The runs were made by:",
        "",
        *(f"    {c}" for c in summary["commands"]),
        "",
        f"Recipe: `{summary['config']}`, steps per round {summary['steps_per_round']}, seeds {summary['seeds']}. "
        f"Machine: {summary['machine']}, torch threads per process {summary['threads_per_process']}, "
        f"{summary['cpu_minutes']} thread-minutes in all. "
        f"Adversarial settings: `{json.dumps(summary['adversarial'])}`.",
        "",
        "Test accuracy (VQA score on the package's test split), mean ± std over seeds, in %. Both methods prune to "
        "the same sparsities (IMP, rewind to θ0, same steps per round).",
        "",
        "| sparsity | standard | adversarial | adversarial − standard |",
        "|---:|---:|---:|---:|",
    ]
    for row in summary["table"]:
        s, a = row.get("standard"), row.get("adversarial")
        diff = f"{100 * (a['mean'] - s['mean']):+.1f}" if s and a else "—"
        lines.append(f"| {100 * row['sparsity']:.1f}% | {_fmt(s)} | {_fmt(a)} | {diff} |")
    w = summary["relaxed_winning_sparsity"]
    top = max(r["sparsity"] for r in summary["table"])
    lines += [
        "",
        "Relaxed winning ticket (sparsest round whose mean is ≥ 99 % of the same method's dense mean): "
        + ", ".join(f"{m} **{'none' if w[m] is None else f'{100 * w[m]:.1f}%'}**" for m in METHODS)
        + f" (the sparsest round of the schedule is {100 * top:.1f}%).",
        "",
        "Cost: median time per training step (forward, backward, optimizer, callbacks; median over the runs of "
        "each method's per-run medians): "
        + ", ".join(f"{m} {t[m]:.3f} s" if t[m] else f"{m} —" for m in METHODS)
        + (f"; **adversarial / standard = {ratio:.2f}×**." if ratio else "."),
        "",
        "Per seed (test accuracy in %, standard / adversarial):",
        "",
        *per_seed_table(
            summary,
            lambda methods, key: " / ".join(
                f"{100 * methods[m][key]:.1f}" if key in methods.get(m, {}) else "—" for m in METHODS
            ),
        ),
    ]
    types = sorted({q for r in summary["table"] for m in METHODS if m in r for q in r[m]["by_type"]})
    if types:
        lines += [
            "",
            "Per question type (test accuracy in %, mean over seeds):",
            "",
            "| sparsity | method | " + " | ".join(types) + " |",
            "|---:|---|" + "---:|" * len(types),
        ]
        for r in summary["table"]:
            for m in METHODS:
                if m in r:
                    accs = " | ".join(f"{100 * r[m]['by_type'][q]:.1f}" if q in r[m]["by_type"] else "—" for q in types)
                    lines.append(f"| {100 * r['sparsity']:.1f}% | {m} | {accs} |")
    lines.append("")
    path.write_text("\n".join(lines))


def grid_cells(args: argparse.Namespace) -> list[dict]:
    """Every run of the grid, the ~4x longer adversarial runs first (processes sharing the grid then finish
    together), seeds in order."""
    order = sorted(args.methods, key=lambda m: m != "adversarial")
    return [{"name": f"{m}-seed{s}", "method": m, "seed": s} for m in order for s in args.seeds]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="examples/easy_vqa/imp.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--cache", default="runs/adversarial")
    p.add_argument("--out", default="docs/results/adversarial")
    p.add_argument(
        "--adv-steps", type=int, default=1, help="PGD steps per modality (VILLA: 3; 1 fits the CPU budget, see docs)"
    )
    p.add_argument(
        "--epsilon-text", type=float, default=0.1, help="L2 radius on the word embeddings (0.5 kept runs at the prior)"
    )
    p.add_argument("--epsilon-image", type=float, default=0.5, help="L2 radius on the projected region features")
    p.add_argument("--norm", choices=("l2", "linf"), default="l2")
    p.add_argument("--kl-weight", type=float, default=1.0)
    p.add_argument("--steps-per-round", type=int, default=None, help="override the recipe (smoke runs)")
    p.add_argument("--target-sparsity", type=float, default=None, help="override the recipe (fewer rounds)")
    p.add_argument("--batch-size", type=int, default=None, help="override the recipe")
    p.add_argument("--max-test-questions", type=int, default=None, help="override the recipe")
    p.add_argument("--max-cells", type=int, default=None, help="stop after this many new runs")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--report-only", action="store_true")
    return p.parse_args(argv)


def main() -> int:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        # several processes may share the grid (one lock file per run)
        for cell in claimed_cells(
            functools.partial(grid_cells, args), cache, name=lambda c: c["name"], max_cells=args.max_cells
        ):
            print(f"[{time.strftime('%H:%M:%S')}] {cell['name']}", flush=True)
            run_cell(cell, args, cache)
            report(args, cache, verbose=False)
    return 0 if report(args, cache) else 1


if __name__ == "__main__":
    sys.exit(main())
