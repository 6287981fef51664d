"""Per-step training overhead of ``LotteryTicketCallback`` vs bare Lightning and Lightning's ``ModelPruning``.

What it measures: the median wall time of one training step (``on_train_batch_start`` of the first callback to
``on_train_batch_end`` of the last: forward, backward, AdamW step and every callback's batch hooks) of a model with
22,020,096 prunable Linear weights (:mod:`common`: ``ToyClassifier(hidden=1024, ffn=5120, num_layers=2)``), on the
CPU with ``torch.set_num_threads(2)``, batch 128, AdamW (weight decay 0.01), in these settings:

* ``bare``: plain ``Trainer.fit``, no pruning;
* ``ours``: ``LotteryTicketCallback`` training a fixed ticket at ``--sparsity`` (global magnitude masks of the
  initial weights, installed through the public ``ticket=`` argument), so every timed step runs with the masks
  live: the callback multiplies the scope weights by their bool masks after every optimizer step;
* ``modelpruning``: ``lightning.pytorch.callbacks.ModelPruning("l1_unstructured", amount=--sparsity,
  use_global_unstructured=True)`` over the same Linear weights, pruning once at train start (a subclass only moves
  the one ``apply_pruning`` call there; the per-step mechanism, ``torch.nn.utils.prune``'s ``weight_orig *
  weight_mask`` forward pre-hook, is Lightning's own). ``use_lottery_ticket_hypothesis=False``: its rewinding only
  acts at pruning time and is not timed;
* ``proposed``: ``LotteryTicketCallback(cpu_float_masks=False)``: the bool multiply that the float-mask cache of
  ``docs/performance.md`` replaced (on the CPU PyTorch runs a scalar dtype-casting loop for float x bool; ``ours``
  multiplies by a cached copy of the masks in the parameters' dtype, the default).

Each trial runs one short fit per setting (``--warmup`` steps discarded, then ``--steps`` timed). Each setting
runs in its own process (its fits in the main thread, as in a user's script), and the fits of a trial step in
lockstep (:class:`common.Lockstep`): exactly one of them runs a training step at any time, round robin in an order
that rotates every round (ABCD, BCDA, ...), and set-up/teardown never overlap a step. So load from other processes (the
machine is shared) hits all settings alike, step by step, and ``torch.set_num_threads(--threads)`` threads serve
the one running step. A setting's figure is the median of its
per-trial medians; ``x bare`` divides those medians; ``paired`` is the median, over all trials and rounds, of the
ratio of a setting's step to the bare step of the same round (adjacent in time, so under the same load); the rule
below uses ``paired``.

Pass/fail rule (exit status): ``spread`` = robust relative spread of the bare per-trial medians,
``1.4826 * MAD / median`` over the trials (~ the relative standard deviation of one trial's figure, load drift
between trials included); ``noise = spread / sqrt(trials)`` (~ the relative standard error of the bare figure).
``ours`` PASSES if its paired ratio ``<= --target`` (1.03); it is WITHIN NOISE (exit 0, with a warning) if
``--target < ratio <= --target + noise``; otherwise it FAILS and the script exits 1. It also exits 1 if a masked
weight of ``ours``/``proposed`` is non-zero after training.

Run (default ~2 minutes on an idle 2-core machine; longer under load)::

    python benchmarks/overhead.py --batch-size 128 --steps 10 --trials 5 --sparsity 0.7 --json overhead.json
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import multiprocessing as mp
import queue
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch
from common import (
    Lockstep,
    StepTimes,
    build_model,
    machine_info,
    make_loader,
    make_trainer,
    median,
    rel_mad,
    scope_params,
)
from lightning.pytorch.callbacks import ModelPruning

from lightning_tickets import LotteryTicketCallback
from lightning_tickets.masks import global_magnitude_masks
from lightning_tickets.ticket import Ticket

SETTINGS = ("bare", "ours", "modelpruning", "proposed")


class PruneAtTrainStart(ModelPruning):
    """Lightning's ``ModelPruning``, pruning once at train start instead of at the end of the first epoch."""

    def __init__(self, amount: float, **kwargs: Any) -> None:
        super().__init__(amount=amount, apply_pruning=False, **kwargs)  # never again at epoch end
        self._amount_at_start = amount

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.apply_pruning(self._amount_at_start)


def _timed_apply(sink: list[float]) -> None:
    """Record the wall time of every mask application (``MaskStore.apply``) of this process in ``sink``."""
    from lightning_tickets import layout

    inner = layout.MaskStore.apply

    def wrapper(self: Any, masks: Any) -> None:
        t0 = time.perf_counter()
        inner(self, masks)
        if masks:
            sink.append(time.perf_counter() - t0)

    layout.MaskStore.apply = wrapper  # type: ignore[method-assign]


def prepare_setting(
    name: str, args: argparse.Namespace, ticket_path: Path, workdir: Path, lockstep: Lockstep
) -> dict[str, Any]:
    """Model, data, callbacks and trainer of one setting."""
    model = build_model(seed=0)
    loader = make_loader(args.batch_size, args.warmup + args.steps)
    timer = StepTimes(args.warmup, lockstep, name, total=args.warmup + args.steps)
    apply_times: list[float] = []
    cb: Any = None
    if name in ("ours", "proposed"):
        cb = LotteryTicketCallback(
            ticket=str(ticket_path), monitor=None, ticket_dir=str(workdir / name), overwrite=True, plot=False,
            cpu_float_masks=name == "ours",
        )  # fmt: skip
        _timed_apply(apply_times)
    elif name == "modelpruning":
        modules = [(model.get_submodule(n.rsplit(".", 1)[0]), "weight") for n in scope_params(model)]
        cb = PruneAtTrainStart(
            amount=args.sparsity,
            pruning_fn="l1_unstructured",
            parameters_to_prune=modules,
            use_global_unstructured=True,
            use_lottery_ticket_hypothesis=False,
            verbose=0,
        )
    elif name != "bare":
        raise ValueError(f"unknown setting {name!r}; use one of {SETTINGS}")
    callbacks = [timer.start] + ([cb] if cb is not None else []) + [timer.end]
    trainer = make_trainer(callbacks, max_steps=args.warmup + args.steps)
    return {"model": model, "loader": loader, "timer": timer, "cb": cb, "trainer": trainer, "apply_times": apply_times}


def finish_setting(name: str, env: dict[str, Any], steps: int) -> dict[str, Any]:
    """Step times of a finished fit, plus the scope sparsity (and, for ours, that masked weights are exactly 0)."""
    params = scope_params(env["model"])  # ModelPruning made its pruning permanent at train end
    n = sum(p.numel() for p in params.values())
    zeros = sum(int((p.detach() == 0).sum()) for p in params.values())
    out: dict[str, Any] = {"times": env["timer"].times, "sparsity": zeros / n}
    if name in ("ours", "proposed"):
        masks = env["cb"].masks
        out["pruned_nonzero"] = sum(int(p.detach()[~masks[k]].count_nonzero()) for k, p in params.items())
        # one call per step (the callback also applies the masks once when it installs them at fit start)
        out["apply_times"] = env["apply_times"][-steps:]
    return out


def _quiet() -> None:
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")


def worker(name: str, args: argparse.Namespace, ticket_path: Path, workdir: Path, lockstep: Lockstep, out: Any) -> None:
    """One setting in its own process: one fit per trial, stepping in lockstep with the other settings' processes.

    Puts ``("ok", name, trial, result)`` per trial on the queue ``out``, or ``("error", name, -1, traceback)``.
    """
    _quiet()
    torch.set_num_threads(args.threads)
    try:
        for trial in range(args.trials):
            env = prepare_setting(name, args, ticket_path, workdir, lockstep)
            env["trainer"].fit(env["model"], train_dataloaders=env["loader"])
            if len(env["timer"].times) != args.steps:
                raise RuntimeError(f"{name}: timed {len(env['timer'].times)} steps, expected {args.steps}")
            out.put(("ok", name, trial, finish_setting(name, env, args.steps)))
            del env
            gc.collect()
    except BaseException:
        lockstep.abort()
        out.put(("error", name, -1, traceback.format_exc()))


def run_trials(settings: list[str], args: argparse.Namespace, ticket_path: Path, workdir: Path) -> dict[str, Any]:
    """All trials: one process per setting; their fits step in lockstep (one step at a time, round robin)."""
    ctx = mp.get_context("spawn")  # no fork after torch has started its thread pools
    lockstep = Lockstep(settings, ctx)
    results: Any = ctx.Queue()
    procs = [
        ctx.Process(target=worker, args=(s, args, ticket_path, workdir, lockstep, results), name=f"fit-{s}")
        for s in settings
    ]
    for proc in procs:
        proc.start()
    got: dict[str, list[Any]] = {s: [None] * args.trials for s in settings}
    pending = len(settings) * args.trials
    ok = False
    try:
        while pending:
            try:
                kind, name, trial, payload = results.get(timeout=5)
            except queue.Empty:
                dead = [proc for proc in procs if proc.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"{dead[0].name} exited with status {dead[0].exitcode}") from None
                continue
            if kind == "error":
                raise RuntimeError(f"setting {name!r} failed:\n{payload}")
            got[name][trial] = payload
            pending -= 1
            if all(got[s][trial] is not None for s in settings):
                line = ", ".join(f"{s} {median(got[s][trial]['times']) * 1e3:.1f}" for s in settings)
                print(f"trial {trial + 1}/{args.trials} (ms/step): {line}", flush=True)
        ok = True
    finally:
        if not ok:
            lockstep.abort()
        for proc in procs:
            proc.join(timeout=None if ok else 30)
            if proc.is_alive():
                proc.terminate()
                proc.join()
    return got


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps per fit (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="discarded steps at the start of each fit (default 3)")
    p.add_argument("--trials", type=int, default=5, help="interleaved trials (default 5)")
    p.add_argument("--sparsity", type=float, default=0.7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--target", type=float, default=1.03, help="max ratio ours/bare (default 1.03)")
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated subset of {','.join(SETTINGS)}")
    p.add_argument("--json", type=Path, default=None, help="write all figures to this file")
    args = p.parse_args(argv)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    if "bare" not in settings:
        p.error("--settings must include 'bare' (ratios are against it)")
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        p.error(f"unknown settings {unknown}; choose from {SETTINGS}")

    torch.set_num_threads(args.threads)
    _quiet()
    t_start = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="lt-overhead-") as tmp:
        workdir = Path(tmp)
        # The ticket: exact global magnitude masks of the initial weights (the same seed builds the same weights).
        ticket_path = workdir / "ticket.safetensors"
        masks = global_magnitude_masks(scope_params(build_model(seed=0)), sparsity=args.sparsity)
        Ticket(masks, {"benchmark": "overhead"}).save(ticket_path)
        n_weights = sum(m.numel() for m in masks.values())
        del masks
        print(
            f"model: {n_weights:,} weights in scope; batch {args.batch_size}; {args.threads} threads; "
            f"sparsity {args.sparsity}; {args.trials} trials x ({args.warmup} warm-up + {args.steps} timed) steps",
            flush=True,
        )

        raw = run_trials(settings, args, ticket_path, workdir)
        per_trial = {s: [median(r["times"]) for r in raw[s]] for s in settings}

    bare = median(per_trial["bare"])
    spread = rel_mad(per_trial["bare"])
    noise = spread / math.sqrt(len(per_trial["bare"]))
    rows = []
    for s in settings:
        med = median(per_trial[s])
        # k-th timed step of every setting of a trial ran in the same lockstep round: adjacent in time
        paired = median([x / b for rs, rb in zip(raw[s], raw["bare"]) for x, b in zip(rs["times"], rb["times"])])
        row = {
            "setting": s,
            "median_ms": med * 1e3,
            "ratio": med / bare,
            "paired_ratio": paired,
            "trial_medians_ms": [x * 1e3 for x in per_trial[s]],
            "sparsity": median([r["sparsity"] for r in raw[s]]),
        }
        if s in ("ours", "proposed"):
            row["mask_apply_ms"] = median([t for r in raw[s] for t in r["apply_times"]]) * 1e3
            row["mask_apply_vs_bare"] = row["mask_apply_ms"] / (bare * 1e3)
            row["pruned_nonzero"] = max(r["pruned_nonzero"] for r in raw[s])
        rows.append(row)

    print(
        f"\n{'setting':<14}{'median ms/step':>16}{'x bare':>9}{'paired':>9}{'sparsity':>10}"
        f"{'mask apply ms (/bare)':>23}"
    )
    for r in rows:
        extra = f"{r['mask_apply_ms']:>15.1f} ({r['mask_apply_vs_bare']:.3f})" if "mask_apply_ms" in r else ""
        print(
            f"{r['setting']:<14}{r['median_ms']:>16.1f}{r['ratio']:>9.3f}{r['paired_ratio']:>9.3f}"
            f"{r['sparsity']:>10.4f}{extra}"
        )
    print(
        f"bare trial spread (1.4826*MAD/median) {spread:.3f}; noise = spread/sqrt({len(per_trial['bare'])}) "
        f"= {noise:.3f}; wall {time.perf_counter() - t_start:.0f} s"
    )

    status, verdict = 0, "not measured (add 'ours' to --settings)"
    by = {r["setting"]: r for r in rows}
    for s in ("ours", "proposed"):
        if s in by and by[s]["pruned_nonzero"] != 0:
            print(f"ERROR: {s}: {by[s]['pruned_nonzero']} masked weights are non-zero after training")
            status = 1
    if "ours" in by:
        ratio = by["ours"]["paired_ratio"]
        if ratio <= args.target:
            verdict = f"PASS: ours {ratio:.3f}x bare <= {args.target}"
        elif ratio <= args.target + noise:
            verdict = f"WITHIN NOISE: ours {ratio:.3f}x bare > {args.target} but <= {args.target} + noise {noise:.3f}"
        else:
            verdict = f"FAIL: ours {ratio:.3f}x bare > {args.target} + noise {noise:.3f}"
            status = 1
    print(verdict)
    if "proposed" in by:  # informational: does not change the exit status
        r = by["proposed"]["paired_ratio"]
        print(f"(proposed: {r:.3f}x bare, {'<=' if r <= args.target else '>'} {args.target} target)")

    if args.json is not None:
        payload = {
            "benchmark": "overhead",
            "command": "python benchmarks/overhead.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": machine_info(),
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "weights_in_scope": n_weights,
            "bare_trial_spread": spread,
            "noise": noise,
            "verdict": verdict,
            "rows": rows,
            "step_times_ms": {s: [[t * 1e3 for t in r["times"]] for r in raw[s]] for s in settings},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
