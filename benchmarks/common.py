"""Shared helpers of the benchmark scripts: the ~22M-weight model, synthetic data, step timers and robust statistics.

The model is :class:`lightning_tickets.toy.ToyClassifier` sized so that its ``"encoder"`` scope (the Linear weights
of ``encoder.layer.N`` and ``pooler.dense``) holds ~22.0M weights: ``hidden=1024, ffn=5120, num_layers=2`` gives
2 x 2 x 1024 x 5120 + 1024 x 1024 = 22,020,096 weights in scope (plus a 256 -> 1024 embedding and a 4-class head
outside it). Training uses the model's AdamW (``lr=3e-3``, PyTorch's default ``weight_decay=0.01``).

Not a test module: run the scripts next to it, e.g. ``python benchmarks/overhead.py``.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Sequence
from typing import Any

import lightning
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from lightning_tickets.scope import resolve_scope
from lightning_tickets.toy import ToyClassifier

#: Model size used by every benchmark (22,020,096 weights in the "encoder" scope).
MODEL_KW: dict[str, int] = {"in_features": 256, "hidden": 1024, "ffn": 5120, "num_layers": 2, "num_classes": 4}


def build_model(seed: int = 0, **overrides: int) -> ToyClassifier:
    """The benchmark model, initialised from ``seed`` (the same seed gives the same weights)."""
    torch.manual_seed(seed)
    return ToyClassifier(**{**MODEL_KW, **overrides})


def scope_params(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The weights the callback prunes (``"encoder"`` scope), by qualified parameter name."""
    return dict(resolve_scope(model, "encoder"))


def make_loader(
    batch_size: int,
    num_batches: int,
    in_features: int = MODEL_KW["in_features"],
    num_classes: int = MODEL_KW["num_classes"],
    seed: int = 1,
) -> DataLoader:
    """``num_batches`` batches of Gaussian inputs with random labels (no shuffling, no workers)."""
    g = torch.Generator().manual_seed(seed)
    n = batch_size * num_batches
    x = torch.randn(n, in_features, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


class Lockstep:
    """Lets several ``Trainer.fit`` calls, each in its own process, run one training step at a time, round robin.

    Every fit waits at a barrier before its first step (all set-ups done) and after its last step (no teardown
    overlaps a timed step); in between, a baton passes A -> B -> C -> A ..., and the order rotates by one every
    round (ABC, BCA, CAB, ...), so load from other processes hits all settings alike, step by step. All fits must run
    the same number of steps. Build it from a ``multiprocessing`` context and pass it to the worker processes.

    Separate processes rather than threads: each fit then runs in a main thread, like a user's script. (In a
    non-main thread, glibc serves the step's large temporaries from a per-thread arena and the process takes
    ~4x fewer page faults per step than in the main thread, which makes every step faster than a user's.)
    """

    def __init__(self, names: Sequence[str], ctx: Any, timeout: float = 900.0) -> None:
        self.names = list(names)
        self.timeout = timeout
        self._cv = ctx.Condition()
        self._pos = ctx.Value("l", 0, lock=False)  # guarded by _cv
        self._round = ctx.Value("l", 0, lock=False)
        self._failed = ctx.Value("b", 0, lock=False)
        self.first = ctx.Barrier(len(self.names), timeout=timeout)
        self.last = ctx.Barrier(len(self.names), timeout=timeout)

    def _turn(self) -> str:
        return self.names[(self._pos.value + self._round.value) % len(self.names)]

    def acquire(self, name: str) -> None:
        with self._cv:
            if not self._cv.wait_for(lambda: self._failed.value or self._turn() == name, timeout=self.timeout):
                raise TimeoutError(f"lockstep: {name!r} waited {self.timeout:.0f} s for its turn")
            if self._failed.value:
                raise RuntimeError("lockstep aborted: another setting failed")

    def release(self, name: str) -> None:
        with self._cv:
            self._pos.value += 1
            if self._pos.value == len(self.names):
                self._pos.value = 0
                self._round.value += 1
            self._cv.notify_all()

    def abort(self) -> None:
        with self._cv:
            self._failed.value = 1
            self._cv.notify_all()
        self.first.abort()
        self.last.abort()


class StepTimes:
    """Train-step timer made of two callbacks: put ``timer.start`` FIRST and ``timer.end`` LAST in ``callbacks``.

    A step is timed (``time.perf_counter``) from the first ``on_train_batch_start`` hook to the last
    ``on_train_batch_end`` hook, so it covers forward, backward, optimizer step and every other callback's batch hooks
    (e.g. applying masks). The first ``warmup`` steps of the fit are discarded (allocator warm-up, lazily created
    optimizer state). With ``lockstep``, the fit takes part in a :class:`Lockstep` round robin as ``name`` and must
    run exactly ``total`` steps. With ``progress_every=N`` it prints every N steps how far the fit is, the median
    step time so far and the time left (``total`` must then be the fit's number of steps).
    """

    def __init__(
        self, warmup: int, lockstep: Lockstep | None = None, name: str = "", total: int = 0, progress_every: int = 0
    ) -> None:
        self.warmup = warmup
        self.times: list[float] = []
        self._t0 = 0.0
        self._seen = 0
        timer = self

        class _Start(Callback):
            def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
                if lockstep is not None:
                    if timer._seen == 0:
                        lockstep.first.wait()
                    lockstep.acquire(name)
                timer._t0 = time.perf_counter()

        class _End(Callback):
            def on_train_batch_end(
                self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
            ) -> None:
                dt = time.perf_counter() - timer._t0
                timer._seen += 1
                if timer._seen > timer.warmup:
                    timer.times.append(dt)
                if progress_every and timer._seen % progress_every == 0 and timer.times:
                    med = statistics.median(timer.times)
                    left = (total - timer._seen) * med / 60
                    print(f"  [{name}] step {timer._seen}/{total}, {med:.3f} s/step, ~{left:.0f} min left", flush=True)
                if lockstep is not None:
                    lockstep.release(name)
                    if timer._seen == total:
                        lockstep.last.wait()

        self.start = _Start()
        self.end = _End()


def make_trainer(callbacks: Sequence[Callback], max_steps: int) -> lightning.Trainer:
    """A quiet single-CPU trainer: no logger, checkpoints, progress bar, model summary or validation."""
    return lightning.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        max_epochs=1,
        callbacks=list(callbacks),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def rel_mad(xs: Sequence[float]) -> float:
    """Robust relative spread: ``1.4826 * median(|x - median(x)|) / median(x)`` (~ relative std for normal data)."""
    if len(xs) < 2:
        return 0.0
    m = median(xs)
    return 1.4826 * median([abs(x - m) for x in xs]) / m


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "loadavg_1_5_15": load,
    }
