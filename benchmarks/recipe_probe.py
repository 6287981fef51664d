"""Dense easy-VQA recipe search (issue 16): which fine-tuning recipe leaves the question-only plateau on every seed.

One cell = (candidate, seed): ONE dense fine-tune (no pruning) of the model in ``--config`` (default the demo's
``examples/easy_vqa/imp.yaml``: its model, data and trainer precision; its ticket callback is not used) with the
candidate's changes, then the test accuracy on the FULL easy-VQA test set (9,673 questions), overall and per
question type (colour / shape / yes-no), plus the validation accuracy on ``--val-questions`` held-out questions
every ``--val-every`` steps (when the model leaves the plateau). The seed reaches the model through
``ticket_quality.build`` (model init and data order; the train/val image split stays the data module's).

Candidates (:data:`CANDIDATES`; ``a+b`` combines two, ``--define NAME=JSON`` adds one) change:

* ``overrides``: LightningCLI arguments (e.g. ``--model.init_args.warmup_steps=50``);
* ``steps``: fine-tuning steps (default: the yaml's ``steps_per_round``), linear LR decay over them;
* ``freeze_steps``: linear-probe warm-up: the pre-trained text embeddings and encoder are frozen for that many steps
  (the new layers -- ``img_embeddings``, pooler, head -- train), then everything trains;
* ``img_lr_multiplier``: the learning rate of ``backbone.img_embeddings`` times this (on top of the new-layer rate);
* ``pooler``: ``"dense"`` (MiniLM's never-trained ``Linear + tanh`` pooler) or ``"first_token"`` (the head reads the
  encoder's ``[CLS]`` output directly);
* ``pretrain_steps``: start from a VL-pre-trained θ0 (MLM + ITM + MRFR on easy-VQA train images with
  ``examples/easy_vqa/pretrain.yaml``'s task and data, seed 0, cached under ``runs/recipe/pretrain/``).

Every finished cell writes ``<cells>/<candidate>-s<seed>.json``; existing cells are skipped, and several processes
can share the directory (``grid.claimed_cells``). ``--report-only`` renders ``docs/results/recipe.md``.

Run (one thread, ~5 min per 500-step cell on one core)::

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/recipe_probe.py --threads 1 \\
        --candidates base warmup --seeds 0 1 2 3 4 5 6 7
    python benchmarks/recipe_probe.py --report-only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grid import claimed_cells  # noqa: E402
from ticket_quality import build, evaluate, load_config  # noqa: E402

#: The accuracy every seed must reach (issue 16).
BAR = 0.97
#: A question type counts as learnt at this accuracy (chance: colour 0.125, shape 0.333, yes/no 0.5).
TYPE_BAR = 0.9
TYPES = ("color", "shape", "yesno")
#: Defaults of every candidate field (``steps=None``: the yaml's ``steps_per_round``).
DEFAULTS: dict[str, Any] = {
    "overrides": [],
    "steps": None,
    "freeze_steps": 0,
    "img_lr_multiplier": 1.0,
    "pooler": "dense",
    "pretrain_steps": 0,
}
#: The candidate recipes, as changes to :data:`DEFAULTS`.
CANDIDATES: dict[str, dict[str, Any]] = {
    "base": {},
    "warmup": {"overrides": ["--model.init_args.warmup_steps=50"]},
    "probe": {"freeze_steps": 100},
    "imglr": {"img_lr_multiplier": 3.0},
    "long": {"steps": 750},
    "cls": {"pooler": "first_token"},
    # UNITER's fine-tuning convention after VL pre-training: only the head is new (img_embeddings, pooler pre-trained)
    "pretrain": {"pretrain_steps": 1000, "overrides": ["--model.init_args.new_backbone_params=none"]},
}
FROZEN_PREFIXES = ("backbone.embeddings.", "backbone.encoder.")


def candidate_spec(name: str, extra: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The full settings of candidate ``name`` (``"a+b"``: both; overrides concatenate, other fields must agree).

    >>> candidate_spec("warmup+probe")["freeze_steps"], candidate_spec("warmup+probe")["overrides"]
    (100, ['--model.init_args.warmup_steps=50'])
    """
    known = {**CANDIDATES, **(extra or {})}
    spec = {k: (list(v) if isinstance(v, list) else v) for k, v in DEFAULTS.items()}
    set_by: dict[str, str] = {}
    for part in name.split("+"):
        if part not in known:
            raise ValueError(f"candidate {part!r} (in {name!r}) is unknown; use one of {sorted(known)} or --define")
        for key, value in known[part].items():
            if key not in DEFAULTS:
                raise ValueError(f"candidate {part!r}: field {key!r} is unknown; fields: {sorted(DEFAULTS)}")
            if key == "overrides":
                spec[key] += list(value)
            elif key in set_by and spec[key] != value:
                raise ValueError(f"candidate {name!r}: {set_by[key]!r} sets {key}={spec[key]!r}, {part!r} {value!r}")
            else:
                spec[key], set_by[key] = value, part
    if spec["pooler"] not in ("dense", "first_token"):
        raise ValueError(f"pooler={spec['pooler']!r}: use 'dense' or 'first_token'")
    return spec


def parse_define(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``["probe200={\\"freeze_steps\\": 200}"]`` -> ``{"probe200": {"freeze_steps": 200}}``."""
    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name or "+" in name:
            raise ValueError(f"--define {item!r}: use NAME=JSON (NAME without '+')")
        out[name] = json.loads(text)
    return out


# ---------------------------------------------------------------------------------------------- model changes
class FirstToken(nn.Module):
    """Pooler replacement: the encoder output at the first (``[CLS]``) position, unchanged."""

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        return sequence[:, 0]


def split_img_lr(model: Any, multiplier: float) -> None:
    """Give ``backbone.img_embeddings`` its own AdamW groups at ``multiplier`` x their group's learning rate."""
    img = {id(p) for p in model.backbone.img_embeddings.parameters()}
    original = model.parameter_groups

    def groups() -> list[dict[str, Any]]:
        out = []
        for g in original():
            rest = [p for p in g["params"] if id(p) not in img]
            mine = [p for p in g["params"] if id(p) in img]
            if rest:
                out.append({**g, "params": rest})
            if mine:
                out.append({**g, "params": mine, "lr": g["lr"] * multiplier, "name": g["name"] + "_img"})
        return out

    model.parameter_groups = groups


class FreezeEncoder(L.Callback):
    """Linear-probe warm-up: pre-trained embeddings + encoder frozen for the first ``steps`` optimizer steps."""

    def __init__(self, steps: int) -> None:
        self.steps, self.frozen = int(steps), []

    def on_train_start(self, trainer, pl_module) -> None:
        if self.steps > 0:
            self.frozen = [p for n, p in pl_module.named_parameters() if n.startswith(FROZEN_PREFIXES)]
            for p in self.frozen:
                p.requires_grad_(False)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.frozen and trainer.global_step >= self.steps:
            for p in self.frozen:
                p.requires_grad_(True)
            self.frozen = []
            print(f"    step {trainer.global_step}: encoder unfrozen", flush=True)


class Probe(L.Callback):
    """Times the training steps, and every ``every`` steps measures val accuracy per type and the mean train loss."""

    def __init__(self, every: int, loader, types: Sequence[str]) -> None:
        self.every, self.loader, self.types = every, loader, types
        self.rows: list[dict[str, Any]] = []
        self.step_seconds = 0.0
        self._t0, self._losses = 0.0, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.step_seconds += time.perf_counter() - self._t0
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        self._losses.append(float(loss))
        step = trainer.global_step
        if self.every and (step % self.every == 0 or step == trainer.max_steps):
            acc, by_type = evaluate(pl_module, self.loader, self.types)
            row = {"step": step, "train_loss": statistics.fmean(self._losses), "val": acc, "val_by_type": by_type}
            self.rows.append(row)
            self._losses = []
            kinds = " ".join(f"{t} {a:.3f}" for t, a in by_type.items())
            print(f"    step {step}: loss {row['train_loss']:.4f} val {acc:.4f} ({kinds}) "
                  f"{self.step_seconds / step:.3f} s/step", flush=True)  # fmt: skip


def _val_types() -> list[str]:
    from lightning_tickets.data.easy_vqa import _easy_vqa, question_type

    return [question_type(t) for t in _easy_vqa().get_train_questions()[0]]


def _trainer(steps: int, precision: str, callbacks: list) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        precision=precision,
        callbacks=callbacks,
    )


def pretrained_backbone(steps: int, args) -> tuple[Path, float]:
    """Path of the cached VL-pre-trained backbone (``steps`` steps, seed 0), built now when absent; with the
    seconds spent building it (0.0 when cached)."""
    from safetensors.torch import save_file

    path = Path(args.pretrain_dir) / f"mlm-itm-mrfr-{steps}steps-s0.safetensors"
    if path.exists():
        return path, 0.0
    print(f"  pre-training θ0: {steps} steps -> {path}", flush=True)
    t0 = time.time()
    overrides = [
        '--model.init_args.backbone.init_args.config_overrides={"hidden_dropout_prob": 0.0, '
        '"attention_probs_dropout_prob": 0.0}',
        "--model.init_args.backbone.init_args.sdpa_backend=math",
    ]
    L.seed_everything(0, workers=True)

    cli = load_config(args.pretrain_config, 0, overrides)
    model, dm = cli.model, cli.datamodule

    class Log(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step % 100 == 0:
                print(f"    pretrain step {trainer.global_step}: loss {float(outputs['loss']):.4f}", flush=True)

    _trainer(steps, args.precision or "bf16-mixed", [Log()]).fit(model, datamodule=dm)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({k: v.contiguous() for k, v in model.backbone.state_dict().items()}, str(tmp))
    os.replace(tmp, path)
    return path, time.time() - t0


# ---------------------------------------------------------------------------------------------- one cell
def cell_name(candidate: str, seed: int) -> str:
    return f"{candidate}-s{seed}"


def run_cell(candidate: str, seed: int, args, extra: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    spec = candidate_spec(candidate, extra)
    t_cell = time.time()
    pretrain_path, pretrain_seconds = None, 0.0
    if spec["pretrain_steps"]:
        pretrain_path, pretrain_seconds = pretrained_backbone(int(spec["pretrain_steps"]), args)
    data = ["--data.init_args.max_test_questions=null", f"--data.init_args.max_val_questions={args.val_questions}"]
    model, dm, cb_args, cli = build(args.config, seed, [*spec["overrides"], *data])
    steps = int(spec["steps"] or cb_args["steps_per_round"])
    if pretrain_path is not None:
        from safetensors.torch import load_file

        model.backbone.load_state_dict(load_file(str(pretrain_path)), strict=True)
    if spec["pooler"] == "first_token":
        model.backbone.pooler = FirstToken()
    if spec["img_lr_multiplier"] != 1.0:
        split_img_lr(model, float(spec["img_lr_multiplier"]))
    dm.setup("fit")
    dm.setup("test")
    probe = Probe(args.val_every, dm.val_dataloader(), _val_types())
    precision = args.precision or cli.config.trainer.get("precision") or "32-true"
    trainer = _trainer(steps, precision, [probe, FreezeEncoder(int(spec["freeze_steps"]))])
    t_fit = time.time()
    trainer.fit(model, datamodule=dm)
    fit_seconds = time.time() - t_fit
    t_test = time.time()
    acc, by_type = evaluate(model, dm.test_dataloader())
    result = {
        "candidate": candidate,
        "seed": seed,
        "spec": spec,
        "config": args.config,
        "command": shlex.join(["python", *sys.argv]),
        "test": acc,
        "test_by_type": by_type,
        "test_questions": len(dm.datasets["test"]),
        "val_questions": len(dm.datasets["val"]),
        "curve": probe.rows,
        "steps": int(trainer.global_step),
        "precision": str(precision),
        "threads": torch.get_num_threads(),
        "seconds_per_step": probe.step_seconds / max(1, trainer.global_step),
        "fit_seconds": fit_seconds,
        "test_seconds": time.time() - t_test,
        "pretrain": str(pretrain_path) if pretrain_path else None,
        "pretrain_seconds": pretrain_seconds,
        "seconds": time.time() - t_cell,
        "commit": _git_commit(),
        "machine": f"{platform.machine()}, torch {torch.__version__}, {os.cpu_count()} cores",
        "loadavg_at_end": list(os.getloadavg()),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    from lightning_tickets.report import write_json_atomic

    write_json_atomic(Path(args.cells) / f"{cell_name(candidate, seed)}.json", result)
    kinds = " ".join(f"{t} {a:.3f}" for t, a in by_type.items())
    print(f"  {candidate} seed {seed}: test {acc:.4f} ({kinds}), {result['seconds']:.0f} s", flush=True)
    return result


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


# ---------------------------------------------------------------------------------------------- report
def load_cells(cells_dir: str | Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(Path(cells_dir).glob("*.json"))]


def _order(name: str) -> tuple[int, str]:
    return (list(CANDIDATES).index(name) if name in CANDIDATES else len(CANDIDATES), name)


def summarise(cells: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per candidate: test accuracy by seed, mean, sample std, min, seeds >= :data:`BAR`, seeds with every
    type >= :data:`TYPE_BAR`, per-type minima over seeds, mean seconds per step. Raises when one candidate's cells
    were run with different settings."""
    by: dict[str, list[Mapping[str, Any]]] = {}
    for c in cells:
        by.setdefault(c["candidate"], []).append(c)
    rows = []
    for name in sorted(by, key=_order):
        group = sorted(by[name], key=lambda c: c["seed"])
        specs = {json.dumps(c["spec"], sort_keys=True) for c in group}
        if len(specs) > 1:
            raise ValueError(f"candidate {name!r}: cells with different settings {sorted(specs)}; rename one")
        accs = [c["test"] for c in group]
        rows.append(
            {
                "candidate": name,
                "spec": group[0]["spec"],
                "by_seed": {c["seed"]: c["test"] for c in group},
                "n": len(accs),
                "mean": statistics.fmean(accs),
                "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "min": min(accs),
                "n_bar": sum(a >= BAR for a in accs),
                "n_types": sum(all(c["test_by_type"].get(t, 0.0) >= TYPE_BAR for t in TYPES) for c in group),
                "type_min": {t: min(c["test_by_type"].get(t, 0.0) for c in group) for t in TYPES},
                "seconds_per_step": statistics.fmean(c["seconds_per_step"] for c in group),
                "steps": sorted({c["steps"] for c in group}),
            }
        )
    return rows


def _settings(spec: Mapping[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in spec.items() if k != "overrides" and v != DEFAULTS[k]]
    parts += [o.removeprefix("--") for o in spec["overrides"]]
    return ", ".join(parts) or "imp.yaml as is"


def _curve(c: Mapping[str, Any]) -> str:
    return ", ".join(f"{r['step']}: {100 * r['val']:.0f}" for r in c.get("curve", []))


def render(cells: Sequence[Mapping[str, Any]]) -> str:
    rows = summarise(cells)
    seeds = sorted({c["seed"] for c in cells})
    threads = sorted({c["threads"] for c in cells})
    commands = sorted({c["command"] for c in cells})
    lines = [
        "# Dense easy-VQA recipe search (issue 16)",
        "",
        "Generated by `benchmarks/recipe_probe.py --report-only` from `docs/results/cells/recipe/*.json` — do not "
        "edit by hand.",
        "",
        f"One cell = one dense fine-tune of `{cells[0]['config'] if cells else ''}`'s model with the candidate's "
        "changes (no pruning), then the test accuracy (%) on the full easy-VQA test set "
        f"({', '.join(sorted({str(c['test_questions']) for c in cells}))} questions). Bar: ≥ {100 * BAR:.0f} on "
        f"every seed, no question type at chance (columns 'types ≥ {100 * TYPE_BAR:.0f}': seeds where colour, shape "
        f"and yes/no all reach {100 * TYPE_BAR:.0f}). Torch threads per process: {threads}. Seconds per step: "
        "training steps only (validation probes excluded), one process, on a machine shared with other jobs.",
        "",
        "| candidate | settings | steps | "
        + " | ".join(f"s{s}" for s in seeds)
        + f" | mean ± std | min | ≥ {100 * BAR:.0f} | types ≥ {100 * TYPE_BAR:.0f} | min colour | min shape "
        "| min yes/no | s/step |",
        "|---|---|---:|" + "---:|" * len(seeds) + "---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cols = [f"{100 * r['by_seed'][s]:.1f}" if s in r["by_seed"] else "—" for s in seeds]
        lines.append(
            f"| {r['candidate']} | {_settings(r['spec'])} | {'/'.join(map(str, r['steps']))} | "
            + " | ".join(cols)
            + f" | {100 * r['mean']:.1f} ± {100 * r['std']:.1f} | {100 * r['min']:.1f} | {r['n_bar']}/{r['n']} | "
            f"{r['n_types']}/{r['n']} | "
            + " | ".join(f"{100 * r['type_min'][t]:.1f}" for t in TYPES)
            + f" | {r['seconds_per_step']:.3f} |"
        )
    lines += [
        "",
        "Per cell (test accuracy by question type; validation accuracy on the held-out questions every probe step):",
        "",
        "| candidate | seed | test | colour | shape | yes/no | val by step | s/step | seconds |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for c in sorted(cells, key=lambda c: (_order(c["candidate"]), c["seed"])):
        t = c["test_by_type"]
        lines.append(
            f"| {c['candidate']} | {c['seed']} | {100 * c['test']:.1f} | "
            + " | ".join(f"{100 * t.get(k, 0.0):.1f}" for k in TYPES)
            + f" | {_curve(c)} | {c['seconds_per_step']:.3f} | {c['seconds']:.0f} |"
        )
    lines += ["", "Commands that produced the cells (from the worktree root):", ""]
    lines += [f"    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE {cmd}" for cmd in commands]
    lines += ["", "Report: `python benchmarks/recipe_probe.py --report-only`.", ""]
    return "\n".join(lines)


def write_report(cells_dir: str | Path, out: str | Path) -> str:
    cells = load_cells(cells_dir)
    if not cells:
        raise SystemExit(f"no finished cells in {cells_dir}")
    text = render(cells)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    return text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="examples/easy_vqa/imp.yaml")
    p.add_argument("--pretrain-config", default="examples/easy_vqa/pretrain.yaml")
    p.add_argument("--pretrain-dir", default="runs/recipe/pretrain")
    p.add_argument("--candidates", nargs="+", default=["base"])
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    p.add_argument("--define", nargs="*", default=[], metavar="NAME=JSON", help="extra candidates")
    p.add_argument("--cells", default="docs/results/cells/recipe")
    p.add_argument("--out", default="docs/results/recipe.md")
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--val-questions", type=int, default=500)
    p.add_argument("--precision", default=None, help="default: the yaml's trainer.precision")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--max-cells", type=int, default=None)
    p.add_argument("--order", choices=("candidate", "seed"), default="candidate", help="cell order: by candidate "
                   "(all seeds of the first candidate first) or by seed")  # fmt: skip
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    extra = parse_define(args.define)
    for c in args.candidates:
        candidate_spec(c, extra)  # fail before any training
    if args.threads:
        torch.set_num_threads(args.threads)
    cells_dir = Path(args.cells)
    cells_dir.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        pairs = [(c, s) for c in args.candidates for s in args.seeds]
        if args.order == "seed":
            pairs.sort(key=lambda cs: (args.seeds.index(cs[1]), args.candidates.index(cs[0])))
        todo = [{"candidate": c, "seed": s, "name": cell_name(c, s)} for c, s in pairs]
        for cell in claimed_cells(lambda: todo, cells_dir, name=lambda c: c["name"], max_cells=args.max_cells):
            run_cell(cell["candidate"], cell["seed"], args, extra)
            write_report(cells_dir, args.out)
    print(write_report(cells_dir, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
