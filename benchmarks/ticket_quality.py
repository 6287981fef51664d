"""Lottery tickets on real data: IMP vs random pruning (RP) vs the ticket mask on shuffled weights (θ″), easy-VQA.

For every seed: one IMP run (``LotteryTicketCallback`` as configured in the yaml: MiniLM-initialised UNITER-style
model, rewind to θ0 = the MiniLM weights at fit start), with the TEST accuracy (VQA score) measured at the end of
every round. Then, for every pruned sparsity of that run, two fixed-ticket controls trained for one round from θ0
with the same recipe: RP (``ticket_mask="random"``: a random mask of the same global sparsity) and θ″
(``ticket_weights="shuffled"``: the IMP mask on weights shuffled within each tensor).

The grid is resumable: each finished cell writes ``<cache>/<cell>.json`` and is skipped on the next run. Results go to
``<out>.json``, ``<out>.md`` and ``<out>.png``.

Run (full grid, hours on 2 CPU cores)::

    python benchmarks/ticket_quality.py --config examples/easy_vqa/imp.yaml --seeds 0 1 2

``--max-cells N`` stops after N new cells (to spread the grid over several sessions); ``--report-only`` rewrites
the report from the cache. Several processes can share one cache (each claims a cell with a lock file, see
``grid.py``); on 2 cores, two one-thread processes finish the grid sooner than one two-thread process::

    for i in 1 2; do python benchmarks/ticket_quality.py --seeds 0 1 2 --threads 1 & done; wait
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lightning_tickets import LotteryTicketCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grid import claimed_cells  # noqa: E402

METHODS = ("imp", "rp", "shuffled")
LABELS_SHORT = {"imp": "IMP", "rp": "RP", "shuffled": "θ″"}
LABELS = {"imp": "IMP ticket (rewind to θ0)", "rp": "random pruning", "shuffled": "IMP mask on shuffled θ (θ″)"}


@functools.cache
def _test_question_types() -> tuple[str, ...]:
    """The question type of every easy-VQA test question, by question index (read once per process)."""
    from lightning_tickets.data.easy_vqa import _easy_vqa, question_type

    return tuple(question_type(t) for t in _easy_vqa().get_test_questions()[0])


@torch.no_grad()
def evaluate(model: L.LightningModule, loader, types: Sequence[str] | None = None) -> tuple[float, dict[str, float]]:
    """VQA score of the argmax answer over the whole loader (= accuracy for single-answer easy-VQA), overall and per
    easy-VQA question type (``color`` / ``shape`` / ``yesno``). ``types``: the question type of every question of the
    loader's split, by ``question_id`` (default: the package's test split)."""
    types = _test_question_types() if types is None else types
    was_training = model.training
    model.eval()
    total = score = 0.0
    per: dict[str, list[float]] = {}
    for batch in loader:
        qids = batch.get("question_id")
        batch = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        pred = model(batch).argmax(-1)
        hits = batch["targets"].gather(1, pred[:, None]).squeeze(1).float().cpu()
        score += float(hits.sum())
        total += len(pred)
        if qids is not None:
            for qid, hit in zip(list(qids), hits.tolist(), strict=True):
                per.setdefault(types[int(qid)], []).append(hit)
    model.train(was_training)
    return score / max(1.0, total), {t: sum(v) / len(v) for t, v in sorted(per.items())}


def test_accuracy(model: L.LightningModule, loader) -> float:
    """VQA score of the argmax answer over the whole loader (= accuracy for single-answer easy-VQA)."""
    return evaluate(model, loader)[0]


class TestAtRoundEnd(L.Callback):
    """Measures test accuracy whenever the ticket callback has finished a round (runs after it)."""

    def __init__(self, cb: LotteryTicketCallback, loader) -> None:
        self.cb, self.loader, self.rows = cb, loader, []

    def _check(self, pl_module) -> None:
        while len(self.rows) < len(self.cb.results):
            r = self.cb.results[len(self.rows)]
            acc, by_type = evaluate(pl_module, self.loader)
            row = {"round": r["round"], "sparsity": r["sparsity"], "val": r["score"], "test": acc}
            self.rows.append({**row, "test_by_type": by_type})
            types = " ".join(f"{t} {a:.3f}" for t, a in by_type.items())
            print(f"  round {r['round']}: sparsity {r['sparsity']:.3f} val {r['score']:.4f} test {acc:.4f} ({types})",
                  flush=True)  # fmt: skip

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._check(pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._check(pl_module)


def load_config(path: str, seed: int | None = None, overrides: Sequence[str] = ()) -> Any:
    """Parse the yaml with ``LightningCLI`` (classes instantiated, nothing run); ``seed`` overrides its
    ``seed_everything``, which LightningCLI applies before building the model; ``overrides`` are further
    command-line arguments (e.g. ``"--data.init_args.batch_size=32"``)."""
    from lightning.pytorch.cli import LightningCLI

    cli = LightningCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=["--config", path, *([] if seed is None else ["--seed_everything", str(seed)]), *overrides],
        save_config_callback=None,
        trainer_defaults={"callbacks": []},
    )
    return cli


def build(config: str, seed: int, overrides: Sequence[str] = ()):
    """Fresh model + datamodule from the yaml, seeded (``overrides``: see :func:`load_config`); returns
    (model, datamodule, callback init args, cli)."""
    L.seed_everything(seed, workers=True)
    cli = load_config(config, seed, overrides)
    if cli.config.seed_everything != seed:
        raise RuntimeError(f"the run was seeded with {cli.config.seed_everything}, not {seed}")
    cb_args = next(c for c in cli.config.trainer.callbacks if "LotteryTicketCallback" in c.class_path).init_args
    return cli.model, cli.datamodule, dict(cb_args), cli


def run_cell(cell: dict, args, cache: Path) -> dict:
    method, seed = cell["method"], cell["seed"]
    model, dm, cb_args, cli = build(args.config, seed)
    dm.setup("fit")
    dm.setup("test")
    test_loader = dm.test_dataloader()
    steps = int(cb_args["steps_per_round"])
    run_dir = cache / cell["name"]
    t0 = time.time()
    common = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        val_check_interval=steps,
        check_val_every_n_epoch=None,
        precision=cli.config.trainer.get("precision") or "32-true",
    )
    if method == "imp":
        cb_args.update(ticket_dir=str(run_dir / "tickets"), overwrite=True, plot=False)
        cb = LotteryTicketCallback(**cb_args)
        probe = TestAtRoundEnd(cb, test_loader)
        trainer = L.Trainer(max_steps=steps * cb.num_rounds, callbacks=[cb, probe], **common)
        trainer.fit(model, dm)
        rows = probe.rows
    else:
        ticket = cache / f"imp-seed{seed}" / "tickets" / f"round-{cell['round']:02d}.safetensors"
        kw = {"ticket_mask": "random"} if method == "rp" else {"ticket_weights": "shuffled"}
        cb = LotteryTicketCallback(
            ticket=str(ticket),
            monitor=cb_args.get("monitor"),
            seed=seed,
            ticket_dir=str(run_dir / "tickets"),
            overwrite=True,
            plot=False,
            **kw,
        )
        trainer = L.Trainer(max_steps=steps, callbacks=[cb], **common)
        trainer.fit(model, dm)
        acc, by_type = evaluate(model, test_loader)
        rows = [
            {
                "round": cell["round"],
                "sparsity": cb.results[0]["sparsity"],
                "val": cb.results[0]["score"],
                "test": acc,
                "test_by_type": by_type,
            }
        ]
        print(f"  {method} seed {seed} sparsity {rows[0]['sparsity']:.3f}: test {rows[0]['test']:.4f}", flush=True)
    result = {
        **cell,
        "rows": rows,
        "seconds": time.time() - t0,
        "steps_per_round": steps,
        "precision": str(common["precision"]),
        "threads": torch.get_num_threads(),
    }
    (cache / f"{cell['name']}.json").write_text(json.dumps(result, indent=2))
    return result


def cells_for(args, cache: Path) -> list[dict]:
    cells = [{"name": f"imp-seed{s}", "method": "imp", "seed": s} for s in args.seeds]
    for s in args.seeds:
        imp = cache / f"imp-seed{s}.json"
        if not imp.exists():
            continue
        for row in json.loads(imp.read_text())["rows"]:
            if row["round"] == 0 or (args.control_rounds and row["round"] not in args.control_rounds):
                continue
            for m in ("rp", "shuffled"):
                cells.append(
                    {"name": f"{m}-seed{s}-round{row['round']:02d}", "method": m, "seed": s, "round": row["round"]}
                )
    return cells


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def report(args, cache: Path) -> dict:
    results = [json.loads(p.read_text()) for p in sorted(cache.glob("*.json"))]
    by: dict[str, dict[float, list[float]]] = {m: {} for m in METHODS}
    per_seed: dict[int, dict[str, dict[float, float]]] = {}
    for r in results:
        for row in r["rows"]:
            by[r["method"]].setdefault(round(row["sparsity"], 4), []).append(row["test"])
            per_seed.setdefault(r["seed"], {}).setdefault(r["method"], {})[round(row["sparsity"], 4)] = row["test"]
    dense = by["imp"].get(0.0, [])
    if not dense:
        print("no finished IMP run yet")
        return {}
    dense_mean, dense_std = _mean_std(dense)
    table = []
    for s in sorted(by["imp"]):
        row = {"sparsity": s}
        for m in METHODS:
            xs = by[m].get(s) if not (m != "imp" and s == 0.0) else None
            if xs:
                mean, std = _mean_std(xs)
                row[m] = {"mean": mean, "std": std, "n": len(xs)}
        table.append(row)
    winners = [r for r in table if r["sparsity"] > 0 and "imp" in r and r["imp"]["mean"] >= 0.99 * dense_mean]
    best = max(winners, key=lambda r: r["sparsity"]) if winners else None
    gap = None
    if best and "rp" in best:
        gap = best["imp"]["mean"] - best["rp"]["mean"]
    summary = {
        "dense": {"mean": dense_mean, "std": dense_std, "n": len(dense)},
        "table": table,
        "relaxed_winning_sparsity": best["sparsity"] if best else None,
        "imp_minus_rp_at_winner": gap,
        "seeds": args.seeds,
        "config": args.config,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "cells": len(results),
        "per_seed": {
            str(k): {m: {str(sp): v for sp, v in d.items()} for m, d in per_seed[k].items()} for k in sorted(per_seed)
        },
        "steps_per_round": sorted({r.get("steps_per_round") for r in results if r.get("steps_per_round")}),
        "precision": sorted({r.get("precision", "32-true") for r in results}),
        "threads_per_process": sorted({r.get("threads") for r in results if r.get("threads")}),
        "cpu_minutes": round(sum(r.get("seconds", 0.0) * r.get("threads", 1) for r in results) / 60, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    _plot(summary, out.with_suffix(".png"))
    _markdown(summary, out.with_suffix(".md"), args)
    print(out.with_suffix(".md").read_text())
    return summary


def _fmt(cell: dict | None) -> str:
    if not cell:
        return "—"
    return f"{100 * cell['mean']:.1f} ± {100 * cell['std']:.1f} (n={cell['n']})"


def per_seed_table(summary: dict, cell: Callable[[dict[str, dict[str, float]], str], str]) -> list[str]:
    """Markdown rows of a seed x sparsity table: ``cell(methods, key)`` writes one seed's cell from its
    ``summary["per_seed"][seed]`` (method -> sparsity key -> test accuracy) and the sparsity key (``"0.334"``)."""
    table = summary["table"]
    lines = [
        "| seed | " + " | ".join(f"{100 * r['sparsity']:.1f}%" for r in table) + " |",
        "|---:|" + "---:|" * len(table),
    ]
    for seed, methods in summary["per_seed"].items():
        lines.append(f"| {seed} | " + " | ".join(cell(methods, str(round(r["sparsity"], 4))) for r in table) + " |")
    return lines


def _markdown(summary: dict, path: Path, args) -> None:
    d = summary["dense"]
    lines = [
        "# Lottery tickets on easy-VQA (real data, CPU)",
        "",
        "Generated by `benchmarks/ticket_quality.py` — do not edit by hand. Command:",
        "",
        f"    python benchmarks/ticket_quality.py --config {args.config} --seeds {' '.join(map(str, args.seeds))}"
        + (f" --control-rounds {' '.join(map(str, args.control_rounds))}" if args.control_rounds else ""),
        "",
        f"Machine: {summary['machine']}. Cells finished: {summary['cells']} "
        f"(steps per round {summary['steps_per_round']}, precision {summary['precision']}, torch threads per "
        f"process {summary['threads_per_process']}, {summary['cpu_minutes']} thread-minutes of training in all). "
        "Test accuracy (VQA score) on the package's test split, mean ± std over seeds, in %.",
        "",
        f"Dense (round 0): **{100 * d['mean']:.1f} ± {100 * d['std']:.1f}** (n={d['n']}).",
        "",
        "| sparsity | " + " | ".join(LABELS[m] for m in METHODS) + " |",
        "|---:|---:|---:|---:|",
    ]
    for row in summary["table"]:
        lines.append(f"| {100 * row['sparsity']:.1f}% | " + " | ".join(_fmt(row.get(m)) for m in METHODS) + " |")
    w = summary["relaxed_winning_sparsity"]
    lines += [
        "",
        "Relaxed winning ticket (IMP mean ≥ 99% of dense mean): "
        + (f"**{100 * w:.1f}% sparsity**" if w is not None else "**none** in this grid")
        + ".",
        (
            "IMP − RP at that sparsity: "
            + (
                f"**{100 * summary['imp_minus_rp_at_winner']:+.1f} points**."
                if summary["imp_minus_rp_at_winner"] is not None
                else "not measured yet."
            )
        )
        if w is not None
        else "",
        "",
        "Per seed (test accuracy in %, IMP at every round / controls where run):",
        "",
        *per_seed_table(
            summary,
            lambda methods, key: (
                ", ".join(
                    f"{LABELS_SHORT[m]} {100 * methods[m][key]:.1f}" for m in METHODS if key in methods.get(m, {})
                )
                or "—"
            ),
        ),
    ]
    lines += [
        "",
        "![score vs sparsity](easy_vqa.png)",
        "",
    ]
    path.write_text("\n".join(lines))


def _plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for m, style in zip(METHODS, ("o-", "s--", "^:")):
        pts = [(r["sparsity"], r[m]) for r in summary["table"] if m in r]
        if m != "imp":
            pts = [(0.0, summary["dense"])] + pts
        if not pts:
            continue
        ax.errorbar(
            [100 * s for s, _ in pts],
            [100 * c["mean"] for _, c in pts],
            yerr=[100 * c["std"] for _, c in pts],
            fmt=style,
            capsize=3,
            label=LABELS[m],
        )
    d = 100 * summary["dense"]["mean"]
    ax.axhline(d, color="gray", linestyle="--", linewidth=1, label="dense")
    ax.axhline(0.99 * d, color="gray", linestyle=":", linewidth=1, label="99% of dense")
    w = summary["relaxed_winning_sparsity"]
    if w is not None:
        y = next(100 * r["imp"]["mean"] for r in summary["table"] if r["sparsity"] == w)
        ax.plot(
            [100 * w],
            [y],
            marker="*",
            markersize=16,
            color="gold",
            markeredgecolor="k",
            linestyle="none",
            label=f"relaxed winning ticket ({100 * w:.0f}%)",
        )
    ax.set(
        xlabel="sparsity of the encoder Linear weights (%)",
        ylabel="test accuracy (%)",
        title="easy-VQA, MiniLM-initialised UNITER-style model",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="examples/easy_vqa/imp.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--cache", default="runs/ticket_quality")
    p.add_argument("--out", default="docs/results/easy_vqa")
    p.add_argument("--max-cells", type=int, default=None, help="stop after this many new cells")
    p.add_argument("--report-only", action="store_true")
    p.add_argument(
        "--control-rounds",
        type=int,
        nargs="+",
        default=None,
        help="train the RP / θ″ controls only at these IMP rounds (default: every pruned round)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument(
        "--no-wait", action="store_true", help="stop when every cell left is running in another process (default: wait)"
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)

    def todo() -> list[dict]:
        # IMP runs first (the controls need their tickets), then the controls in seed order
        cells = cells_for(args, cache)
        return sorted(cells, key=lambda c: (c["method"] != "imp", c["seed"], c.get("round", 0), c["method"]))

    if not args.report_only:
        for cell in claimed_cells(
            todo, cache, name=lambda c: c["name"], max_cells=args.max_cells, wait=not args.no_wait
        ):
            run_cell(cell, args, cache)
            report(args, cache)
    summary = report(args, cache)
    return 0 if summary else 1


if __name__ == "__main__":
    sys.exit(main())
