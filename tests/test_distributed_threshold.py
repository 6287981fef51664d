"""The histogram threshold on parameters split UNEVENLY between 2 gloo processes equals the single-process mask."""

from __future__ import annotations

import torch
from helpers.dist_threshold_run import _data, _shard, _sparsities
from helpers.launch import free_port, run_helper

from lightning_tickets.masks import global_magnitude_masks


def test_sharded_histogram_threshold_equals_single_process(tmp_path):
    run_helper("dist_threshold_run.py", tmp_path, free_port(), cwd=tmp_path, timeout=300)
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
