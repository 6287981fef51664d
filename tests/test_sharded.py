"""Sharded (FSDP2) support: building blocks on raw torch.distributed, and the callback under ModelParallelStrategy.

Both spawn fresh interpreters (2 CPU processes on gloo, clean environment) like test_distributed_threshold.py. The
Lightning runs are seeded so that FSDP2 and DDP train bit-identically: FSDP2's tickets must equal DDP's exactly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers.launch import free_port, run_helper
from helpers.sharded_blocks_run import make_model
from helpers.sharded_run import MODEL, ShardedToy

from lightning_tickets import LotteryTicketCallback, Ticket
from lightning_tickets.masks import compute_masks, sparsity_of
from lightning_tickets.sharded import (
    check_shardable,
    gather_masks,
    global_sparsity,
    local_slices,
    scatter_masks,
    sharded_masks,
)


def _cat(r0: dict, r1: dict, n: str) -> torch.Tensor:
    """The full tensor from rank 0's and rank 1's dim-0 shards (FSDP2's layout)."""
    return torch.cat([r0[n], r1[n]])


# ---------------------------------------------------------------------- single process: plain tensors pass through
def test_plain_tensors_behave_like_the_unsharded_functions():
    g = torch.Generator().manual_seed(0)
    params = {"a": torch.randn(6, 4, generator=g), "b": torch.randn(9, generator=g)}
    assert check_shardable(params) is False
    for method, gran in (("magnitude", "global"), ("magnitude", "layerwise"), ("random", "global")):
        got = sharded_masks(params, None, 0.5, method, gran, torch.Generator().manual_seed(3))
        ref = compute_masks(params, None, 0.5, method, gran, torch.Generator().manual_seed(3))
        assert all(torch.equal(got[n], ref[n]) for n in ref)
        assert global_sparsity(got) == sparsity_of(ref)
    assert gather_masks(got, params)["a"].dtype == torch.bool
    assert torch.equal(scatter_masks(got, params)["b"], got["b"])


def test_sharded_helpers_name_bad_input():
    params = {"w": torch.zeros(2, 3)}
    with pytest.raises(ValueError, match=r"'w': full tensor has shape \[3, 2\], the parameter \[2, 3\]"):
        local_slices({"w": torch.zeros(3, 2)}, params)
    with pytest.raises(KeyError, match="'v' is not a parameter here"):
        local_slices({"v": torch.zeros(2, 3)}, params)
    with pytest.raises(TypeError, match="mask 'w' has dtype torch.float32; expected torch.bool"):
        scatter_masks({"w": torch.zeros(2, 3)}, params)
    with pytest.raises(ValueError, match="granularity='heads' is not supported on sharded parameters"):
        sharded_masks(params, None, 0.5, granularity="heads")


def test_strategy_check_accepts_model_parallel_and_still_refuses_fsdp1():
    from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

    cb = LotteryTicketCallback(ticket="unused.safetensors", monitor=None)
    ok = SimpleNamespace(strategy=ModelParallelStrategy.__new__(ModelParallelStrategy))
    cb.setup(ok, None, "fit")  # fixed-ticket mode returns right after the strategy check
    bad = SimpleNamespace(strategy=FSDPStrategy.__new__(FSDPStrategy))
    with pytest.raises(RuntimeError, match=r"FSDPStrategy strategy yet.*ModelParallelStrategy with FSDP2 fully_shard"):
        cb.setup(bad, None, "fit")


# ---------------------------------------------------------------------- raw FSDP2 on 2 gloo processes
def test_building_blocks_on_fsdp2_shards_equal_unsharded(tmp_path):
    run_helper("sharded_blocks_run.py", tmp_path, free_port(), cwd=tmp_path)

    r0, r1 = (torch.load(tmp_path / f"r{r}.pt", weights_only=False) for r in (0, 1))
    model = make_model()
    full = {n: p.detach() for n, p in model.named_parameters()}
    ref_params = {n: t for n, t in full.items() if n.endswith("weight")}
    assert r0["sharded"] and r1["sharded"]
    # uneven shards, one of them empty
    assert r0["local_shapes"]["0.weight"] == [4, 5] and r1["local_shapes"]["0.weight"] == [3, 5]
    assert r0["local_shapes"]["1.weight"] == [1, 7] and r1["local_shapes"]["1.weight"] == [0, 7]
    for method, gran in (("magnitude", "global"), ("magnitude", "layerwise"), ("random", "global")):
        g = torch.Generator().manual_seed(7)
        m1 = compute_masks(ref_params, None, 0.5, method, gran, g)
        m2 = compute_masks(ref_params, m1, 0.8, method, gran, g)
        for n in ref_params:
            assert torch.equal(r0[(method, gran)][0][n], m1[n]), (method, gran, n)  # gathered on every rank (dst=None)
            assert torch.equal(r1[(method, gran)][0][n], m1[n]), (method, gran, n)
            assert torch.equal(r0[(method, gran)][1][n], m2[n]), (method, gran, n)  # gathered on rank 0 only
            assert torch.equal(_cat(r0[(method, gran)][2], r1[(method, gran)][2], n), m2[n])  # local shards
        assert r1[(method, gran)][1] == {}
        assert r0[(method, gran)][3] == r1[(method, gran)][3] == pytest.approx(sparsity_of(m2))
    # scatter of a full ticket, slicing of full tensors, per-shard snapshot / rewind, gather of the snapshot
    ticket = r0[("magnitude", "global")][0]
    for n in ref_params:
        assert torch.equal(_cat(r0["scattered"], r1["scattered"], n), ticket[n])
    for n, t in full.items():
        assert torch.equal(r0["rewound"][n], t) and torch.equal(r1["rewound"][n], t)
        assert torch.equal(r0["snapshot_full"][n], t)
        assert torch.equal(_cat(r0["snapshot_local"], r1["snapshot_local"], n), t)
        assert torch.equal(_cat(r0["slices_roundtrip"], r1["slices_roundtrip"], n), t)
    assert r1["snapshot_full"] == {}
    # masks multiplied into the local shards reach the full parameters
    m2 = r0[("magnitude", "global")][1]
    for n in ref_params:
        assert torch.equal(r0["masked_full"][n], ref_params[n] * m2[n])
    assert "Replicate()" in r0["replicate_error"] and "tensor_parallel_size=1" in r0["replicate_error"]
    heads, mixed = r0["callback_errors"]
    assert "granularity='heads' is not supported on sharded (FSDP2) parameters" in heads
    assert "mixes sharded (DTensor) and plain parameters: ['extra.weight']" in mixed and "fully_shard" in mixed


# ---------------------------------------------------------------------- the callback under ModelParallelStrategy
@pytest.fixture(scope="module")
def imp_runs(tmp_path_factory):
    """IMP (3 rounds to 75%) with DDP and with FSDP2 (checkpoints every round), same seed and data."""
    root = tmp_path_factory.mktemp("sharded")
    run_helper("sharded_run.py", "ddp", str(root / "ddp"), cwd=root / "ddp")
    run_helper("sharded_run.py", "fsdp2", str(root / "fsdp2"), "--ckpt-every-round", cwd=root / "fsdp2")
    return root


def _dumps(d: Path) -> tuple[dict, dict]:
    return tuple(torch.load(d / f"rank{r}.pt", weights_only=False) for r in (0, 1))  # type: ignore[return-value]


def test_fsdp2_tickets_equal_ddp_tickets(imp_runs):
    ddp, _ = _dumps(imp_runs / "ddp")
    f0, f1 = _dumps(imp_runs / "fsdp2")
    assert len(f0["sharded"]) == len(f0["final"])  # every parameter was a DTensor
    # uneven shards of a pruned weight (67 rows over 2 ranks)
    name = "encoder.layer.0.intermediate.dense.weight"
    assert f0["masks"][name].shape[0] == 34 and f1["masks"][name].shape[0] == 33
    for r in range(3):  # the saved tickets: same names, shapes, masks and format as DDP's
        a = Ticket.load(imp_runs / "ddp" / "tickets" / f"round-{r:02d}.safetensors")
        b = Ticket.load(imp_runs / "fsdp2" / "tickets" / f"round-{r:02d}.safetensors")
        assert list(a.masks) == list(b.masks)
        assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks), r
        assert b.metadata["round"] == r
    assert [round(x["sparsity"], 3) for x in f0["results"]] == [0.0, 0.5, 0.75]
    assert f0["results"] == f1["results"] == ddp["results"]
    for n in ddp["masks"]:  # local masks are the shards of the ticket; snapshot θ0 per shard
        assert torch.equal(_cat(f0["masks"], f1["masks"], n), ddp["masks"][n])
    for n in ddp["snapshot"]:
        assert torch.equal(_cat(f0["snapshot"], f1["snapshot"], n), ddp["snapshot"][n])
    for n in ddp["final"]:  # bit-identical training, pruned weights exactly zero
        assert torch.equal(f0["final"][n], ddp["final"][n]), n
    last = Ticket.load(imp_runs / "fsdp2" / "tickets" / "round-02.safetensors")
    for n, m in last.masks.items():
        assert bool((f0["final"][n][~m] == 0).all())
    # the sharded run's ticket loads into an unsharded model
    plain = ShardedToy(**MODEL)
    applied = last.apply(plain)
    assert set(applied) == set(last.masks)
    assert bool((plain.get_parameter(name)[~last.masks[name]] == 0).all())


def test_fsdp2_resume_mid_imp_is_bit_identical(imp_runs, tmp_path):
    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copytree(imp_runs / "fsdp2" / "tickets", out / "tickets")  # resume into the run's own (non-empty) dir
    ckpt = imp_runs / "fsdp2" / "ckpt" / "epoch=1.ckpt"  # end of round 1: masks + snapshot in the checkpoint
    assert ckpt.is_dir()  # ModelParallelStrategy's distributed checkpoint
    run_helper("sharded_run.py", "fsdp2", str(out), "--resume", str(ckpt), cwd=out)
    a0, a1 = _dumps(imp_runs / "fsdp2")
    b0, b1 = _dumps(out)
    assert b0["results"] == a0["results"]
    for n in a0["final"]:
        assert torch.equal(b0["final"][n], a0["final"][n]), n
    for n in a0["snapshot"]:
        assert torch.equal(b0["snapshot"][n], a0["snapshot"][n]) and torch.equal(b1["snapshot"][n], a1["snapshot"][n])
    a = Ticket.load(imp_runs / "fsdp2" / "tickets" / "round-02.safetensors")
    b = Ticket.load(out / "tickets" / "round-02.safetensors")
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)


def test_fsdp2_fixed_ticket_scatters_a_full_ticket(imp_runs, tmp_path):
    path = imp_runs / "ddp" / "tickets" / "round-02.safetensors"
    ticket = Ticket.load(path)
    run_helper("sharded_run.py", "fsdp2", str(tmp_path), "--ticket", str(path), "--max-epochs", "1", cwd=tmp_path)
    f0, f1 = _dumps(tmp_path)
    for n, m in ticket.masks.items():
        assert torch.equal(_cat(f0["masks"], f1["masks"], n), m)
        assert bool((f0["final"][n][~m] == 0).all())
        assert bool((f0["final"][n][m] != 0).all())  # kept weights are not zeroed
    summary = json.loads((tmp_path / "fixed" / "summary.json").read_text())
    assert summary["rounds"][0]["sparsity"] == pytest.approx(ticket.sparsity)


def test_fsdp2_early_bird_equals_ddp_and_resumes_mid_window(tmp_path):
    """Early-bird rounds under FSDP2: the distances (differing bits summed over both ranks' shards) and the early ends
    equal DDP's; a resume from the checkpoint at the end of epoch 0 (mid round 0: 4 checks into a window of 4, the
    previous mask packed per shard, gathered into the checkpoint and scattered back) ends the same rounds."""
    ddp, fsdp, resumed = tmp_path / "ddp", tmp_path / "fsdp2", tmp_path / "resumed"
    run_helper("sharded_run.py", "ddp", str(ddp), "--early-bird", "--max-epochs", "9", cwd=ddp)
    run_helper("sharded_run.py", "fsdp2", str(fsdp), "--early-bird", "--max-epochs", "9", "--ckpt-every-round",
               cwd=fsdp)  # fmt: skip
    d0, _ = _dumps(ddp)
    f0, f1 = _dumps(fsdp)
    assert f0["results"] == f1["results"] == d0["results"]
    assert [(r["step"], r["epoch"]) for r in d0["results"]] == [(16, 1), (32, 3), (56, 6)]
    assert [r["early_bird"]["converged_step"] for r in d0["results"]] == [10, 26, None]
    assert all(0 < d < 0.5 for d in d0["results"][0]["early_bird"]["distances"][1:])
    resumed.mkdir()
    shutil.copytree(fsdp / "tickets", resumed / "tickets")
    run_helper("sharded_run.py", "fsdp2", str(resumed), "--early-bird", "--max-epochs", "9", "--resume",
               str(fsdp / "ckpt" / "epoch=0.ckpt"), cwd=resumed)  # fmt: skip
    assert _dumps(resumed)[0]["results"] == f0["results"]
