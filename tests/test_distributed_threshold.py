"""The histogram threshold on parameters split UNEVENLY between 2 gloo processes equals the single-process mask."""

from __future__ import annotations

import os
import socket

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


def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        tensors = _data()
        local = _shard(tensors, rank)
        masks = None
        results = []
        for s in _sparsities():
            masks = global_magnitude_masks(local, masks, s, **histogram_reducers())
            results.append({n: m.clone() for n, m in masks.items()})
        torch.save(results, os.path.join(out, f"r{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sharded_histogram_threshold_equals_single_process(tmp_path):
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="fork")
    r0, r1 = torch.load(tmp_path / "r0.pt"), torch.load(tmp_path / "r1.pt")
    tensors = _data()
    # single-process reference, in the same global order as the shards (rank 0's, then rank 1's)
    ordered = {**_shard(tensors, 0), **_shard(tensors, 1)}
    ref_masks = None
    total = sum(t.numel() for t in tensors.values())
    for i, s in enumerate(_sparsities()):
        ref_masks = global_magnitude_masks(ordered, ref_masks, s)
        got = {**r0[i], **r1[i]}
        assert got.keys() == ref_masks.keys()
        for n in ref_masks:
            assert torch.equal(got[n], ref_masks[n]), (s, n)
        assert sum(int((~m).sum()) for m in got.values()) == round(s * total)
        if i == 1:  # the tie block is split: some 0.5s pruned, some kept, on both ranks
            flat = torch.cat([t.abs() for t in ordered.values()])
            m = torch.cat([got[n] for n in ordered])
            assert bool((m & (flat == 0.5)).any()) and bool((~m & (flat == 0.5)).any())
    # and the concatenate + kthvalue reference agrees on the threshold side of every kept/pruned weight
    flat = torch.cat([t.abs() for t in ordered.values()])
    m = torch.cat([ref_masks[n] for n in ordered])
    assert flat[m].min() >= flat[~m].max()
