"""DDP on 2 CPU processes (gloo), unseeded, with ranks initialised differently: everything must agree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_tickets import Ticket

SCRIPT = Path(__file__).with_name("ddp_run.py")


@pytest.mark.parametrize(("strategy", "method"), [("ddp", "magnitude"), ("ddp_spawn", "random")])
def test_ddp_ranks_agree_on_masks_theta0_and_weights(tmp_path, strategy, method):
    # a clean launch environment: nothing inherited from earlier in-process runs (ports, ranks, seeds)
    drop = ("PL_", "LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_", "NODE_RANK", "GROUP_RANK", "TORCHELASTIC", "LT_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), strategy, str(tmp_path), method],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    for key in ("theta0", "snapshot", "masks", "final"):
        assert r0[key].keys() == r1[key].keys(), key
        for n in r0[key]:
            assert torch.equal(r0[key][n], r1[key][n]), (key, n)
    assert r0["results"] == r1["results"]
    assert [round(r["sparsity"], 4) for r in r0["results"]] == [0.0, 0.5, 0.75]
    # θ0 really is the synced start, and the ticket file (written by rank 0 only) holds the same masks
    for n, t in r0["snapshot"].items():
        assert torch.equal(t, r0["theta0"][n])
    ticket = Ticket.load(tmp_path / "tickets" / "round-02.safetensors")
    assert all(torch.equal(ticket.masks[n], r0["masks"][n]) for n in ticket.masks)
