"""Worker launcher for test_distributed_threshold: 2 gloo processes (spawned fresh), each dumps its masks.

Usage: python tests/helpers/dist_threshold_run.py OUT_DIR PORT

The data and its split over the ranks are defined here (:func:`_data`, :func:`_shard`, :func:`_sparsities`); the
test builds its single-process reference from the same functions.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_tickets.distributed import histogram_reducers
from lightning_tickets.masks import global_magnitude_masks


def _data():
    g = torch.Generator().manual_seed(0)
    tensors = {f"t{i}": torch.randn(n, generator=g) for i, n in enumerate([1000, 37, 4096, 5, 777])}
    tensors["t1"][:20] = 0.5  # many exact ties, straddling the threshold in some rounds
    tensors["t2"][100:140] = -0.5
    tensors["t4"][:30] = 0.5
    return tensors


def _sparsities():
    """Include a sparsity whose threshold falls INSIDE the block of tied values 0.5 (partial ties pruned)."""
    flat = torch.cat([t.abs() for t in _data().values()])
    below, ties = int((flat < 0.5).sum()), int((flat == 0.5).sum())
    assert ties == 90
    return (0.2, (below + ties // 2) / flat.numel(), 0.77, 0.9)


# rank 0 holds t0 and the first part of t2; rank 1 holds the rest (uneven split, and one tensor split across ranks)
def _shard(tensors, rank):
    if rank == 0:
        return {"t0": tensors["t0"], "t1": tensors["t1"], "t2a": tensors["t2"][:1500]}
    return {"t2b": tensors["t2"][1500:], "t3": tensors["t3"], "t4": tensors["t4"]}


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        local = _shard(_data(), rank)
        masks, results = None, []
        for s in _sparsities():
            masks = global_magnitude_masks(local, masks, s, **histogram_reducers())
            results.append({n: m.clone() for n, m in masks.items()})
        torch.save(results, os.path.join(out, f"r{rank}.pt"))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    mp.start_processes(_worker, args=(int(sys.argv[2]), sys.argv[1]), nprocs=2, start_method="spawn")
