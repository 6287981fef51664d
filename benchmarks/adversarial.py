"""Adversarial (VILLA-style) vs standard lottery tickets on easy-VQA: same IMP schedule, same seeds, same budget.

For every seed and method, one IMP run with the yaml recipe (``examples/easy_vqa/imp.yaml``: MiniLM-initialised
UNITER-style model, dense round + 4 pruning rounds to 70 % sparsity, rewind to θ0 = the MiniLM weights), with the
TEST accuracy (VQA score) measured at the end of every round and the time of every training step:

* ``standard``: the recipe as is;
* ``adversarial``: the same recipe with ``model.init_args.adversarial`` set (:class:`AdversarialConfig`: PGD on the
  word embeddings and on the projected region features, symmetric-KL consistency term). Both methods prune to the
  same sparsities (the schedule does not depend on the scores) and train the same number of steps per round.

The grid is resumable: each finished run writes ``<cache>/<method>-seed<s>.json`` and is skipped on the next call.
Results go to ``<out>.json`` and ``<out>.md``: accuracy per sparsity (mean ± std over seeds), the relaxed winning
ticket of each method (sparsest round with mean >= 99 % of its own dense mean) and the median time per step.

Full run (2 seeds x 2 methods; see docs/adversarial.md for the measured cost)::

    nice -n 10 python benchmarks/adversarial.py --seeds 0 1

Smoke run (a few steps per round, nothing written to docs/)::

    python benchmarks/adversarial.py --seeds 0 --steps-per-round 4 --target-sparsity 0.3 \\
        --max-test-questions 64 --cache /tmp/adv-smoke --out /tmp/adv-smoke/report

``--max-cells N`` stops after N new runs; ``--report-only`` rewrites the report from the cache.
"""

from __future__ import annotations

import argparse
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
from ticket_quality import TestAtRoundEnd

from lightning_tickets import LotteryTicketCallback
from lightning_tickets.adversarial import AdversarialConfig

METHODS = ("standard", "adversarial")


def adversarial_config(args: argparse.Namespace) -> AdversarialConfig:
    return AdversarialConfig(
        steps=args.adv_steps,
        epsilon={"text": args.epsilon_text, "image": args.epsilon_image},
        norm=args.norm,
        kl_weight=args.kl_weight,
    )


def build(args: argparse.Namespace, method: str, seed: int) -> tuple[Any, Any, dict, Any]:
    """Model + datamodule from the yaml (seeded), with the method's ``adversarial`` argument set through the CLI."""
    from lightning.pytorch.cli import LightningCLI

    L.seed_everything(seed, workers=True)
    extra = []
    if method == "adversarial":
        cfg = adversarial_config(args)
        extra.append(f"--model.init_args.adversarial={json.dumps(cfg.__dict__ | {'modalities': list(cfg.modalities)})}")
    if args.batch_size is not None:
        extra.append(f"--data.init_args.batch_size={args.batch_size}")
    if args.max_test_questions is not None:
        extra.append(f"--data.init_args.max_test_questions={args.max_test_questions}")
    cli = LightningCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=["--config", args.config, *extra],
        save_config_callback=None,
        trainer_defaults={"callbacks": []},
    )
    cb_args = next(c for c in cli.config.trainer.callbacks if "LotteryTicketCallback" in c.class_path).init_args
    return cli.model, cli.datamodule, dict(cb_args), cli


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
    timer = StepTimes(warmup=min(3, max(0, total - 2)))
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


def report(args: argparse.Namespace, cache: Path, verbose: bool = True) -> dict:
    results = [json.loads(p.read_text()) for p in sorted(cache.glob("*.json"))]
    results = [r for r in results if r.get("method") in METHODS]
    if not results:
        print("no finished run yet")
        return {}
    by: dict[str, dict[float, list[float]]] = {m: {} for m in METHODS}
    step_times: dict[str, list[float]] = {m: [] for m in METHODS}
    for r in results:
        for row in r["rows"]:
            by[r["method"]].setdefault(round(row["sparsity"], 4), []).append(row["test"])
        if r.get("step_seconds_median"):
            step_times[r["method"]].append(r["step_seconds_median"])
    sparsities = sorted({s for m in METHODS for s in by[m]})
    table = [{"sparsity": s, **{m: _mean_std(by[m][s]) for m in METHODS if by[m].get(s)}} for s in sparsities]
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
    adv = next((r["adversarial"] for r in results if r.get("adversarial")), None)
    summary = {
        "table": table,
        "relaxed_winning_sparsity": winners,
        "step_seconds_median": timing,
        "time_ratio": ratio,
        "adversarial": adv,
        "seeds": sorted({r["seed"] for r in results}),
        "runs": [r["name"] for r in results],
        "steps_per_round": sorted({r["steps_per_round"] for r in results}),
        "config": args.config,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
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
        "Generated by `benchmarks/adversarial.py` — do not edit by hand. Recipe: "
        f"`{summary['config']}`, steps per round {summary['steps_per_round']}, seeds {summary['seeds']}. "
        f"Machine: {summary['machine']}. Adversarial settings: `{json.dumps(summary['adversarial'])}`.",
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
    lines += [
        "",
        "Relaxed winning ticket (sparsest round whose mean is ≥ 99 % of the same method's dense mean): "
        + ", ".join(f"{m} **{'none' if w[m] is None else f'{100 * w[m]:.1f}%'}**" for m in METHODS)
        + ".",
        "",
        "Cost: median time per training step (forward, backward, optimizer, callbacks; median over the runs of "
        "each method's per-run medians): "
        + ", ".join(f"{m} {t[m]:.3f} s" if t[m] else f"{m} —" for m in METHODS)
        + (f"; **adversarial / standard = {ratio:.2f}×**." if ratio else "."),
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="examples/easy_vqa/imp.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--cache", default="runs/adversarial")
    p.add_argument("--out", default="docs/results/adversarial")
    p.add_argument("--adv-steps", type=int, default=3, help="PGD steps per modality (VILLA: 3)")
    p.add_argument("--epsilon-text", type=float, default=0.5, help="L2 radius on the word embeddings")
    p.add_argument("--epsilon-image", type=float, default=2.0, help="L2 radius on the projected region features")
    p.add_argument("--norm", choices=("l2", "linf"), default="l2")
    p.add_argument("--kl-weight", type=float, default=1.0)
    p.add_argument("--steps-per-round", type=int, default=None, help="override the recipe (smoke runs)")
    p.add_argument("--target-sparsity", type=float, default=None, help="override the recipe (fewer rounds)")
    p.add_argument("--batch-size", type=int, default=None, help="override the recipe")
    p.add_argument("--max-test-questions", type=int, default=None, help="override the recipe")
    p.add_argument("--max-cells", type=int, default=None, help="stop after this many new runs")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    done = 0
    while not args.report_only:
        todo = [
            {"name": f"{m}-seed{s}", "method": m, "seed": s}
            for s in args.seeds
            for m in args.methods
            if not (cache / f"{m}-seed{s}.json").exists()
        ]
        if not todo or (args.max_cells is not None and done >= args.max_cells):
            break
        cell = todo[0]
        print(f"[{time.strftime('%H:%M:%S')}] {cell['name']} ({len(todo)} left)", flush=True)
        run_cell(cell, args, cache)
        done += 1
        report(args, cache, verbose=False)
    return 0 if report(args, cache) else 1


if __name__ == "__main__":
    sys.exit(main())
