"""Micro-benchmark: ways of keeping pruned weights at exactly zero, their speed and their exactness.

Three parts, all on the CPU with ``torch.set_num_threads(2)``:

A. **Isolated op** over the 22,020,096 scope weights of the benchmark model (:mod:`common`) with a 70% mask:
   ``torch._foreach_mul_`` with the bool masks (what ``LotteryTicketCallback._apply_masks`` does today), per-tensor
   ``mul_`` with bool masks, ``masked_fill_`` with a stored inverted bool mask, ``torch.where(mask, w, 0, out=w)``,
   ``torch._foreach_mul_`` with masks stored in the weights' dtype (float32), the same with the bool masks converted
   to float32 on every call, and ``bitwise_and_`` of the weights' int32 view with an int32 0/-1 mask. Methods are
   interleaved; median and minimum over ``--reps``.
B. **Inside a training step** (plain PyTorch loop: zero_grad, forward, backward, AdamW step; batch 128): no masking,
   each weight-masking method after ``optimizer.step()``, and masking the *gradients* instead, from a
   ``register_post_accumulate_grad_hook`` per weight (bool ``mul_``, float ``mul_``, inverted ``masked_fill_``).
   Variants are interleaved step by step (one step of each, in a rotating order, then again), so load from other
   processes hits all of them alike. Figures: the median step time, the median of the same-round ratio to the
   unmasked step, and the median time spent masking inside the step (timed around the op, or inside the hooks),
   which is far less noisy on a shared machine than a difference of whole steps.
C. **Exactness** on a small model with AdamW (``lr=1e-2``, ``weight_decay=0.1``), foreach and fused
   implementations: after every one of ``--exact-steps`` steps, every masked weight must be exactly 0, and the kept
   weights must equal (bit for bit) those of the current method. Gradient masking is run both with a fresh optimizer
   (its state is zero for the pruned entries) and, as a negative control, with AdamW state carried over from dense
   steps (it is not exact then: the old moments keep moving pruned weights).

Run (~1-2 minutes on an idle 2-core machine)::

    python benchmarks/mask_apply.py --json mask_apply.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import build_model, machine_info, median, scope_params

from lightning_tickets.masks import global_magnitude_masks

Params = list[torch.Tensor]


# ---------------------------------------------------------------------------------------------- mask representations
def representations(params: Params, masks: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    return {
        "bool": masks,
        "inv_bool": [~m for m in masks],
        "float": [m.to(p.dtype) for p, m in zip(params, masks)],
        "int32": [m.to(torch.int32).neg_() for m in masks],  # 0 -> 0x00000000, 1 -> 0xFFFFFFFF
    }


def weight_methods(params: Params, rep: dict[str, list[torch.Tensor]]) -> dict[str, Callable[[], None]]:
    """In-place ways to zero the pruned weights; all exact (pruned entries 0, kept entries unchanged)."""
    zero = torch.zeros((), dtype=params[0].dtype)

    def foreach_mul_bool() -> None:
        torch._foreach_mul_(params, rep["bool"])

    def mul_bool() -> None:
        for p, m in zip(params, rep["bool"]):
            p.mul_(m)

    def masked_fill_inv() -> None:
        for p, m in zip(params, rep["inv_bool"]):
            p.masked_fill_(m, 0.0)

    def where_out() -> None:
        for p, m in zip(params, rep["bool"]):
            torch.where(m, p, zero, out=p)

    def foreach_mul_float() -> None:
        torch._foreach_mul_(params, rep["float"])

    def to_float_per_call() -> None:  # converts the bool masks on every call (no cached float copy)
        torch._foreach_mul_(params, [m.to(p.dtype) for p, m in zip(params, rep["bool"])])

    def int32_and() -> None:
        for p, m in zip(params, rep["int32"]):
            p.view(torch.int32).bitwise_and_(m)

    return {
        "foreach_mul_bool (current)": foreach_mul_bool,
        "mul_bool": mul_bool,
        "masked_fill_inv": masked_fill_inv,
        "where_out": where_out,
        "foreach_mul_float (proposed)": foreach_mul_float,
        "to_float_per_call": to_float_per_call,
        "int32_and": int32_and,
    }


MASK_BYTES = {
    "foreach_mul_bool (current)": 1,
    "mul_bool": 1,
    "masked_fill_inv": 1,
    "where_out": 1,
    "foreach_mul_float (proposed)": 4,
    "to_float_per_call": 1,  # stores bool masks; a float32 copy is made (and freed) on every call
    "int32_and": 4,
}


def grad_hooks(
    params: Params, rep: dict[str, list[torch.Tensor]], kind: str, clock: list[float] | None = None
) -> list[Any]:
    """Register a post-accumulate-grad hook per weight that masks its gradient; returns the handles.

    With ``clock`` (a one-element list), the seconds spent inside the hooks are added to ``clock[0]``.
    """
    ops: dict[str, Callable[[torch.Tensor, torch.Tensor], Any]] = {
        "grad_mul_bool": lambda g, m: g.mul_(m),
        "grad_mul_float": lambda g, m: g.mul_(m),
        "grad_masked_fill_inv": lambda g, m: g.masked_fill_(m, 0.0),
    }
    which = {"grad_mul_bool": "bool", "grad_mul_float": "float", "grad_masked_fill_inv": "inv_bool"}[kind]
    op = ops[kind]
    handles = []
    for p, m in zip(params, rep[which]):

        def hook(t: torch.Tensor, m: torch.Tensor = m) -> None:
            t0 = time.perf_counter()
            op(t.grad, m)
            if clock is not None:
                clock[0] += time.perf_counter() - t0

        handles.append(p.register_post_accumulate_grad_hook(hook))
    return handles


GRAD_KINDS = ("grad_mul_bool", "grad_mul_float", "grad_masked_fill_inv")


# ---------------------------------------------------------------------------------------------- part A
def part_a(reps: int, sparsity: float) -> list[dict[str, Any]]:
    model = build_model(seed=0)
    sp = scope_params(model)
    masks_d = global_magnitude_masks(sp, sparsity=sparsity)
    params = [p.detach() for p in sp.values()]
    masks = list(masks_d.values())
    rep = representations(params, masks)
    methods = weight_methods(params, rep)
    # exactness on fresh copies of the dense weights: every method equals the reference (w * mask)
    ref = [p * m for p, m in zip(params, masks)]
    exact = {}
    backup = [p.clone() for p in params]
    for name, fn in methods.items():
        fn()
        exact[name] = all(torch.equal(p, r) for p, r in zip(params, ref))
        for p, b in zip(params, backup):
            p.copy_(b)
    del backup, ref
    times: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(reps):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    n = sum(p.numel() for p in params)
    return [
        {
            "method": k,
            "median_ms": median(v[1:] or v) * 1e3,
            "min_ms": min(v) * 1e3,
            "exact": exact[k],
            "mask_bytes": MASK_BYTES[k] * n,
        }
        for k, v in times.items()
    ]


# ---------------------------------------------------------------------------------------------- part B
def part_b(steps: int, batch_size: int, sparsity: float) -> list[dict[str, Any]]:
    model = build_model(seed=0)
    sp = scope_params(model)
    masks = list(global_magnitude_masks(sp, sparsity=sparsity).values())
    params = list(sp.values())
    rep = representations([p.detach() for p in params], masks)
    after = weight_methods([p.detach() for p in params], rep)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch_size, model.hparams.in_features, generator=g)
    y = torch.randint(0, model.hparams.num_classes, (batch_size,), generator=g)

    def step(fn: Callable[[], None] | None, clock: list[float]) -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if fn is not None:
            t0 = time.perf_counter()
            with torch.no_grad():
                fn()
            clock[0] += time.perf_counter() - t0

    variants: dict[str, tuple[str | None, Callable[[], None] | None]] = {"none (bare step)": (None, None)}
    variants.update({f"weights: {k}": (None, fn) for k, fn in after.items() if k != "mul_bool"})
    variants.update({f"grads (hook): {k}": (k, None) for k in GRAD_KINDS})
    names = list(variants)
    times: dict[str, list[float]] = {k: [] for k in names}
    masking: dict[str, list[float]] = {k: [] for k in names}
    for r in range(steps + 1):  # round 0 is warm-up; every later round runs each variant for one step
        k = r % len(names)
        for name in names[k:] + names[:k]:
            kind, fn = variants[name]
            clock = [0.0]
            handles = grad_hooks(params, rep, kind, clock) if kind else []
            t0 = time.perf_counter()
            step(fn, clock)
            if r > 0:
                times[name].append(time.perf_counter() - t0)
                masking[name].append(clock[0])
            for h in handles:
                h.remove()
    bare = times["none (bare step)"]
    rows = []
    for k, v in times.items():
        paired = median([a / b for a, b in zip(v, bare)])  # same round: adjacent in time
        rows.append(
            {
                "variant": k,
                "median_ms": median(v) * 1e3,
                "paired_ratio": paired,
                "masking_ms": median(masking[k]) * 1e3,
                "masking_vs_bare_step": median(masking[k]) / median(bare),
                "step_times_ms": [t * 1e3 for t in v],
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------- part C
def _small_run(method: str, impl: str, steps: int, carry_state: bool) -> tuple[list[torch.Tensor], int, list[int]]:
    """Train a small model with masks kept by ``method``; returns kept weights, max leaked count, leaks per step."""
    model = build_model(seed=3, in_features=32, hidden=64, ffn=256, num_layers=2)
    sp = scope_params(model)
    params = list(sp.values())
    g = torch.Generator().manual_seed(5)
    x = torch.randn(256, 32, generator=g)
    y = torch.randint(0, 4, (256,), generator=g)
    kw = {"lr": 1e-2, "weight_decay": 0.1, impl: True}

    def loss() -> torch.Tensor:
        return torch.nn.functional.cross_entropy(model(x), y)

    opt = torch.optim.AdamW(model.parameters(), **kw)
    if carry_state:  # dense steps first: AdamW moments become non-zero everywhere; then mask without a reset
        for _ in range(3):
            opt.zero_grad()
            loss().backward()
            opt.step()
    masks = list(global_magnitude_masks(sp, sparsity=0.7).values())
    with torch.no_grad():
        torch._foreach_mul_([p.detach() for p in params], masks)
    if not carry_state:
        opt = torch.optim.AdamW(model.parameters(), **kw)  # fresh state, as after the callback's optimizer reset
    rep = representations([p.detach() for p in params], masks)
    handles = grad_hooks(params, rep, method) if method in GRAD_KINDS else []
    fn = None if method in GRAD_KINDS else weight_methods([p.detach() for p in params], rep)[method]
    leaks = []
    for _ in range(steps):
        opt.zero_grad()
        loss().backward()
        opt.step()
        if fn is not None:
            with torch.no_grad():
                fn()
        leaks.append(sum(int(p.detach()[~m].count_nonzero()) for p, m in zip(params, masks)))
    for h in handles:
        h.remove()
    kept = [p.detach()[m].clone() for p, m in zip(params, masks)]
    return kept, max(leaks), leaks


def part_c(steps: int) -> list[dict[str, Any]]:
    rows = []
    methods = list(MASK_BYTES)
    for impl in ("foreach", "fused"):
        ref, _, _ = _small_run("foreach_mul_bool (current)", impl, steps, carry_state=False)
        for carry in (False, True):
            for method in methods + list(GRAD_KINDS):
                if carry and method not in GRAD_KINDS and method != "foreach_mul_bool (current)":
                    continue
                kept, leaked, leaks = _small_run(method, impl, steps, carry_state=carry)
                same = all(torch.equal(a, b) for a, b in zip(kept, ref)) if not carry else None
                rows.append(
                    {
                        "adamw": impl,
                        "optimizer_state": "carried over" if carry else "fresh",
                        "method": method,
                        "max_nonzero_pruned": leaked,
                        "exact": leaked == 0,
                        "kept_bitwise_equal_to_current": same,
                        "nonzero_pruned_per_step": leaks,
                    }
                )
    return rows


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=15, help="part A repetitions (default 15)")
    p.add_argument("--steps", type=int, default=12, help="part B timed steps per variant (default 12)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--sparsity", type=float, default=0.7)
    p.add_argument("--exact-steps", type=int, default=30, help="part C steps (default 30)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--parts", default="abc", help="which parts to run (default abc)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {
        "benchmark": "mask_apply",
        "machine": machine_info(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    status = 0
    if "a" in args.parts:
        rows = part_a(args.reps, args.sparsity)
        out["isolated_op"] = rows
        base = next(r for r in rows if "current" in r["method"])
        print(f"A. isolated op over {rows[0]['mask_bytes']:,} weights (sparsity {args.sparsity}), {args.reps} reps")
        print(f"{'method':<30}{'median ms':>10}{'min ms':>9}{'vs current':>11}{'mask MB':>9}  exact")
        for r in rows:
            print(
                f"{r['method']:<30}{r['median_ms']:>10.1f}{r['min_ms']:>9.1f}"
                f"{r['median_ms'] / base['median_ms']:>11.2f}{r['mask_bytes'] / 2**20:>9.1f}  {r['exact']}"
            )
            status |= not r["exact"]
    if "b" in args.parts:
        rows = part_b(args.steps, args.batch_size, args.sparsity)
        out["in_step"] = rows
        print(f"\nB. one training step (AdamW, batch {args.batch_size}), {args.steps} interleaved steps per variant")
        print(f"{'variant':<45}{'step ms':>9}{'paired x bare':>14}{'masking ms':>12}{'masking/bare step':>19}")
        for r in rows:
            print(
                f"{r['variant']:<45}{r['median_ms']:>9.1f}{r['paired_ratio']:>14.3f}{r['masking_ms']:>12.1f}"
                f"{r['masking_vs_bare_step']:>19.3f}"
            )
    if "c" in args.parts:
        rows = part_c(args.exact_steps)
        out["exactness"] = rows
        print(f"\nC. exactness, AdamW lr=1e-2 weight_decay=0.1, {args.exact_steps} steps, sparsity 0.7")
        print(f"{'adamw':<9}{'opt. state':<14}{'method':<30}{'max nonzero pruned':>19}  kept == current")
        for r in rows:
            print(
                f"{r['adamw']:<9}{r['optimizer_state']:<14}{r['method']:<30}{r['max_nonzero_pruned']:>19}  "
                f"{r['kept_bitwise_equal_to_current']}"
            )
            if r["optimizer_state"] == "fresh":
                status |= (not r["exact"]) or (r["kept_bitwise_equal_to_current"] is False)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
