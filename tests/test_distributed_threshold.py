"""The histogram threshold on parameters split UNEVENLY between 2 gloo processes equals the single-process mask."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

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


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sharded_histogram_threshold_equals_single_process(tmp_path):
    # a fresh interpreter spawns the ranks: forking a pytest process whose OpenMP pool is running can deadlock
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "RANK", "LOCAL_RANK", "WORLD_SIZE"))}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("dist_threshold_run.py")), str(tmp_path), str(_free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
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
