"""Kill-during-write driver for tests/test_faults.py: ``python fault_writer.py KIND ROOT TRIALS SEED [MAX_DELAY]``.

KIND is ``ticket`` (``Ticket.save``), ``summary`` (``report.write_json_atomic``) or ``apply`` (``lightning-tickets
ticket apply`` to a ``.pt`` output). The driver first writes the two reference versions ``ROOT/ref-A.*`` and
``ROOT/ref-B.*`` (uninterrupted). Then, per trial ``i``, it writes version A to ``ROOT/trial-i/TARGET`` (the previous
version), forks a child that rewrites TARGET in a loop (B, A, B, ...), sleeps a random time in ``[0, MAX_DELAY]`` s and
SIGKILLs the child. The test then checks that every TARGET is a complete copy of A or B. Forking (instead of starting
a new interpreter per trial) keeps a trial cheap; the driver runs torch single-threaded, so forking is safe.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import torch

TARGETS = {"ticket": "t.safetensors", "summary": "summary.json", "apply": "pruned.pt"}
SHAPES = {"enc.0.weight": (1024, 1024), "enc.1.weight": (1024, 1000), "head.weight": (3, 7)}


def masks(version: str) -> dict[str, torch.Tensor]:
    """Deterministic masks of version ``A`` or ``B`` (also used by the test to check the result)."""
    g = torch.Generator().manual_seed(1 if version == "A" else 2)
    return {n: torch.rand(s, generator=g) < (0.3 if version == "A" else 0.6) for n, s in SHAPES.items()}


def summary(version: str) -> dict:
    rows = [{"round": i, "sparsity": i / 5000, "score": 0.5 + i / 1e4, "version": version} for i in range(5000)]
    return {"monitor": "val/acc", "version": version, "rounds": rows}


def checkpoint() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {n: torch.randn(s, generator=g) for n, s in SHAPES.items()}


def _writer(kind: str, root: Path):
    if kind == "ticket":
        from lightning_tickets.ticket import Ticket

        return lambda v, path: Ticket(masks(v)).save(path)
    if kind == "summary":
        from lightning_tickets.report import write_json_atomic

        return lambda v, path: write_json_atomic(path, summary(v))
    from lightning_tickets.ticket import Ticket
    from lightning_tickets.tools import main

    torch.save({"state_dict": checkpoint()}, root / "model.ckpt")
    for v in "AB":
        Ticket(masks(v)).save(root / f"ticket-{v}.safetensors")

    def apply(v: str, path: Path) -> None:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            rc = main(["apply", str(root / f"ticket-{v}.safetensors"), str(root / "model.ckpt"), str(path)])
        if rc != 0:
            raise RuntimeError(f"ticket apply failed with status {rc}")

    return apply


def run(kind: str, root: Path, trials: int, seed: int, max_delay: float) -> None:
    torch.set_num_threads(1)  # no thread pool is running when the process forks
    write = _writer(kind, root)
    target = TARGETS[kind]
    for v in "AB":
        write(v, root / f"ref-{v}{Path(target).suffix}")
    rng = random.Random(seed)
    delays = []
    for i in range(trials):
        path = root / f"trial-{i}" / target
        path.parent.mkdir()
        write("A", path)
        pid = os.fork()
        if pid == 0:  # child: rewrite until killed
            try:
                k = 0
                while True:
                    write("B" if k % 2 == 0 else "A", path)
                    k += 1
            finally:
                os._exit(1)
        delay = rng.uniform(0.0, max_delay)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            raise RuntimeError(f"trial {i}: the writer ended by itself (status {status}) before the kill")
        delays.append(delay)
    print(json.dumps({"kind": kind, "trials": trials, "delays": delays}))


if __name__ == "__main__":
    kind, root, trials, seed = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    run(kind, root, trials, seed, float(sys.argv[5]) if len(sys.argv) > 5 else 0.6)
