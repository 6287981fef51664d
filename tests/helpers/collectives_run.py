"""Worker launcher for test_distributed: 3 gloo processes (spawned fresh) call every collective of
:mod:`lightning_tickets.distributed` with rank-dependent inputs, and each dumps what it got.

Usage: python tests/helpers/collectives_run.py OUT_DIR PORT

The inputs of every rank are defined here (:func:`inputs`); the test builds its expectations from the same function.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 3


def inputs(rank: int) -> dict:
    """What rank ``rank`` starts with: tensors, masks, an object and counts that differ on every rank."""
    g = torch.Generator().manual_seed(100 + rank)
    base = torch.randn(4, 3, generator=g)
    return {
        "tensors": {
            "f32": torch.full((3, 4), float(rank + 1)),
            "i64": torch.arange(5, dtype=torch.int64) * (rank + 1),
            "f16": torch.randn(6, generator=g).to(torch.float16),
            "empty": torch.zeros(2, 0),
            "nc": base.t(),  # a non-contiguous view (broadcast through a contiguous buffer, copied back)
        },
        "masks": {
            "m7": torch.rand(7, generator=g) < 0.5,
            "m35": torch.rand(3, 5, generator=g) < 0.5,
            "m64": torch.rand(8, 8, generator=g) < 0.3,
            "empty": torch.zeros(0, 4, dtype=torch.bool),
        },
        "object": {"rank": rank, "names": [f"w{rank}"] * (rank + 1)},
        "sum": torch.tensor([rank + 1, 10 * (rank + 1)], dtype=torch.int64),
        "count": [5, 7, 11][rank],
    }


def _import_distributed():
    """``lightning_tickets.distributed`` without running the package's ``__init__`` (which imports Lightning: ~4 s
    of CPU per rank on a loaded machine); the module and its own imports (``bits``) are the real files."""
    import importlib
    import importlib.util
    import types

    if "lightning_tickets" not in sys.modules:
        spec = importlib.util.find_spec("lightning_tickets")
        pkg = types.ModuleType("lightning_tickets")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["lightning_tickets"] = pkg
    return importlib.import_module("lightning_tickets.distributed")


class _FakeStrategy:
    """A Lightning-like strategy whose broadcast returns a marker (proves broadcast_object delegates to it)."""

    def broadcast(self, obj, src=0):
        return ("via-strategy", obj, src)


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    D = _import_distributed()
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        x = inputs(rank)
        tensors = x["tensors"]
        ids = {n: (id(t), t.data_ptr()) for n, t in tensors.items()}
        D.broadcast_tensors_(tensors)
        sum_in = x["sum"].clone()
        summed = D.all_reduce_sum(x["sum"])
        res = {
            "module": D.__file__,
            "is_distributed": D.is_distributed(),
            "tensors": {n: t.clone() for n, t in tensors.items()},
            "in_place": all((id(t), t.data_ptr()) == ids[n] for n, t in tensors.items()),
            "masks": D.broadcast_masks(x["masks"]),
            "object": D.broadcast_object(x["object"]),
            "object_src1": D.broadcast_object(x["object"], src=1),
            "object_strategy": D.broadcast_object(x["object"], strategy=_FakeStrategy()),
            "sum": summed,
            "sum_input_unchanged": bool(torch.equal(x["sum"], sum_in)),
            "prefix": D.exclusive_prefix_sum(x["count"]),
        }
        torch.save(res, os.path.join(out, f"r{rank}.pt"))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    mp.start_processes(_worker, args=(int(sys.argv[2]), sys.argv[1]), nprocs=WORLD, start_method="spawn")
