"""Worker launcher for test_distributed_threshold: 2 gloo processes (spawned fresh), each dumps its masks.

Usage: python tests/dist_threshold_run.py OUT_DIR PORT
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_distributed_threshold import _data, _shard, _sparsities  # noqa: E402

from lightning_tickets.distributed import histogram_reducers  # noqa: E402
from lightning_tickets.masks import global_magnitude_masks  # noqa: E402


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
