"""DDP on 2 CPU processes (gloo), unseeded, with ranks initialised differently: everything must agree."""

from __future__ import annotations

import pytest
import torch
from helpers.launch import run_helper

from lightning_tickets import Ticket


@pytest.mark.parametrize(("strategy", "method"), [("ddp", "magnitude"), ("ddp_spawn", "random")])
def test_ddp_ranks_agree_on_masks_theta0_and_weights(tmp_path, strategy, method):
    run_helper("ddp_run.py", "toy", strategy, tmp_path, method, cwd=tmp_path, timeout=300)
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


def test_ddp_early_bird_decision_is_rank_zeros(tmp_path):
    """Rank 1 measures every distance as 1.0 and would never end a round early; rank 0's distances (broadcast) decide:
    both ranks record them and end rounds 0 and 1 at the end of their first epoch (checks at 2 and 4 steps)."""
    run_helper("ddp_run.py", "early_bird", "ddp", tmp_path, cwd=tmp_path, timeout=300)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["results"] == r1["results"] and r0["steps"] == r1["steps"] == 4 + 4 + 12
    assert [r["step"] for r in r0["results"]] == [4, 8, 20]
    for row in r0["results"][:2]:
        e = row["early_bird"]
        assert e["ended_early"] and e["distances"][0] is None and e["distances"][1] < 0.5
    for n in r0["masks"]:
        assert torch.equal(r0["masks"][n], r1["masks"][n]), n
