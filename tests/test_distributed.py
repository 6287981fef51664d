"""Direct tests of :mod:`lightning_tickets.distributed`: no-ops in one process, rank 0's values on 3 gloo ranks."""

from __future__ import annotations

import pytest
import torch
from helpers.collectives_run import WORLD, inputs
from helpers.launch import free_port, run_helper

from lightning_tickets import distributed as D
from lightning_tickets.masks import global_magnitude_masks


# -- a single process (no process group)
def test_single_process_is_not_distributed():
    assert D.is_distributed() is False


def test_single_process_broadcasts_are_identity():
    x = inputs(1)
    tensors = x["tensors"]
    before = {n: t.clone() for n, t in tensors.items()}
    D.broadcast_tensors_(tensors)
    assert all(torch.equal(tensors[n], before[n]) for n in before)
    masks = D.broadcast_masks(x["masks"])
    assert masks is not x["masks"] and masks.keys() == x["masks"].keys()
    assert all(masks[n] is x["masks"][n] for n in masks)
    obj = x["object"]
    assert D.broadcast_object(obj) is obj


def test_broadcast_object_uses_the_strategy_when_given():
    calls = []

    class Strategy:
        def broadcast(self, obj, src=0):
            calls.append((obj, src))
            return "from rank 0"

    assert D.broadcast_object("mine", strategy=Strategy(), src=0) == "from rank 0"
    assert calls == [("mine", 0)]


def test_single_process_reductions():
    t = torch.tensor([3, 4], dtype=torch.int64)
    assert torch.equal(D.all_reduce_sum(t), torch.tensor([3, 4]))
    assert D.exclusive_prefix_sum(17) == 0


def test_histogram_reducers_plug_into_global_magnitude_masks():
    reducers = D.histogram_reducers()
    assert set(reducers) == {"all_reduce", "prefix_sum"}
    assert reducers["all_reduce"] is D.all_reduce_sum and reducers["prefix_sum"] is D.exclusive_prefix_sum
    g = torch.Generator().manual_seed(0)
    w = {"a": torch.randn(50, generator=g), "b": torch.randn(7, 9, generator=g)}
    got = global_magnitude_masks(w, None, 0.6, **reducers)
    ref = global_magnitude_masks(w, None, 0.6)
    assert all(torch.equal(got[n], ref[n]) for n in w)


# -- 3 gloo processes that start with different values
@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("collectives")
    run_helper("collectives_run.py", out, free_port(), cwd=out, timeout=300)
    return [torch.load(out / f"r{r}.pt") for r in range(WORLD)]


def test_ranks_are_distributed(ranks):
    assert {r["module"] for r in ranks} == {D.__file__}  # the ranks tested this very module
    assert [r["is_distributed"] for r in ranks] == [True] * WORLD


def test_broadcast_tensors_gives_rank0_values_in_place(ranks):
    ref = inputs(0)["tensors"]
    assert not torch.equal(inputs(1)["tensors"]["f16"], ref["f16"])  # the ranks really started apart
    for r, res in enumerate(ranks):
        assert res["in_place"], r
        for n, t in ref.items():
            got = res["tensors"][n]
            assert got.dtype == t.dtype and got.shape == t.shape, (r, n)
            assert torch.equal(got, t), (r, n)


def test_broadcast_masks_gives_rank0_masks(ranks):
    ref = inputs(0)["masks"]
    for r, res in enumerate(ranks):
        assert res["masks"].keys() == ref.keys()
        for n, m in ref.items():
            assert res["masks"][n].dtype == torch.bool and torch.equal(res["masks"][n], m), (r, n)


def test_broadcast_object_gives_the_source_rank_object(ranks):
    for res in ranks:
        assert res["object"] == inputs(0)["object"]
        assert res["object_src1"] == inputs(1)["object"]
    for r, res in enumerate(ranks):  # with a strategy, only the strategy decides
        assert res["object_strategy"] == ("via-strategy", inputs(r)["object"], 0)


def test_all_reduce_sum_sums_over_ranks_without_touching_the_input(ranks):
    expected = sum(inputs(r)["sum"] for r in range(WORLD))
    assert expected.tolist() == [6, 60]
    for res in ranks:
        assert torch.equal(res["sum"], expected) and res["sum"].device.type == "cpu"
        assert res["sum_input_unchanged"]


def test_exclusive_prefix_sum_counts_lower_ranks(ranks):
    counts = [inputs(r)["count"] for r in range(WORLD)]
    assert [res["prefix"] for res in ranks] == [sum(counts[:r]) for r in range(WORLD)] == [0, 5, 12]
