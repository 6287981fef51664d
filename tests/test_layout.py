"""Direct tests of :mod:`lightning_tickets.layout` on plain (replicated) parameters: :class:`MaskStore`."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn.utils import prune

from lightning_tickets.layout import MaskStore, ShardedMaskStore, mask_store_for, named_parameters
from lightning_tickets.masks import global_magnitude_masks, layerwise_magnitude_masks
from lightning_tickets.pruner import Pruner


def _model(seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(13, 9), torch.nn.ReLU(), torch.nn.Linear(9, 5), torch.nn.Linear(5, 3))


def _weights(model):
    return {n: p for n, p in model.named_parameters() if n.endswith("weight")}


def _torch_prune_masks(model, sparsity: float, kind: str = "global") -> dict[str, torch.Tensor]:
    """The oracle: torch.nn.utils.prune on a copy of the model with its current (already masked) weights.

    ``round(sparsity * N)`` smallest |w| are pruned; weights already pruned are exact zeros, so they are among them.
    """
    clone = copy.deepcopy(model)
    linears = [(name, m) for name, m in clone.named_modules() if isinstance(m, torch.nn.Linear)]
    if kind == "global":
        total = sum(m.weight.numel() for _, m in linears)
        amount = round(sparsity * total)
        prune.global_unstructured([(m, "weight") for _, m in linears], prune.L1Unstructured, amount=amount)
    else:
        for _, m in linears:
            prune.l1_unstructured(m, "weight", amount=round(sparsity * m.weight.numel()))
    return {f"{name}.weight": m.weight_mask.bool() for name, m in linears}


@pytest.mark.parametrize("kind", ["global", "layerwise"])
def test_compute_and_apply_match_torch_prune_over_rounds(kind):
    model = _model()
    params = _weights(model)
    total = sum(p.numel() for p in params.values())
    store = MaskStore(params, Pruner(kind))
    masks = None
    for target in (0.2, 0.5, 0.8):
        oracle = _torch_prune_masks(model, target, kind)
        ref = (global_magnitude_masks if kind == "global" else layerwise_magnitude_masks)(params, masks, target)
        new = store.compute(masks, target, final=target == 0.8)
        assert list(new) == list(params)
        for n in params:
            assert new[n].dtype == torch.bool and torch.equal(new[n], oracle[n]) and torch.equal(new[n], ref[n]), n
        if masks is not None:  # pruned weights stay pruned
            assert all(bool((~masks[n] & new[n]).sum() == 0) for n in params)
        masks = new
        store.apply(masks)
        pruned = sum(int((p == 0).sum()) for p in params.values())
        if kind == "global":
            assert pruned == round(target * total) == total - sum(int(m.sum()) for m in masks.values())


@pytest.mark.parametrize("float_masks", [True, False])
def test_apply_zeroes_exactly_the_pruned_weights(float_masks):
    model = _model(1)
    params = _weights(model)
    before = {n: p.detach().clone() for n, p in params.items()}
    biases = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("bias")}
    store = MaskStore(params, Pruner("global"), cpu_float_masks=float_masks)
    masks = store.compute(None, 0.6, final=False)
    store.apply(masks)
    for n, p in params.items():
        assert torch.equal(p[masks[n]], before[n][masks[n]]), n  # kept weights untouched, bit for bit
        assert bool((p[~masks[n]] == 0).all()), n
    # biases are out of scope: untouched
    assert all(torch.equal(b, biases[n]) for n, b in model.named_parameters() if n.endswith("bias"))


def test_float_cache_and_bool_paths_give_identical_weights_after_updates():
    a, b = _model(2), _model(2)
    sa = MaskStore(_weights(a), Pruner("global"), cpu_float_masks=True)
    sb = MaskStore(_weights(b), Pruner("global"), cpu_float_masks=False)
    masks_a, masks_b = sa.compute(None, 0.5, final=False), sb.compute(None, 0.5, final=False)
    assert all(torch.equal(masks_a[n], masks_b[n]) for n in masks_a)
    g = torch.Generator().manual_seed(3)
    for _ in range(3):  # "optimizer steps" revive pruned weights; apply (cached factors on the float path) re-zeroes
        sa.apply(masks_a)
        sb.apply(masks_b)
        with torch.no_grad():
            for pa, pb in zip(sa.params.values(), sb.params.values()):
                d = torch.randn(pa.shape, generator=g)
                pa.add_(d)
                pb.add_(d)
    sa.apply(masks_a)
    sb.apply(masks_b)
    for n in sa.params:
        assert torch.equal(sa.params[n], sb.params[n]), n
        assert bool((sa.params[n][~masks_a[n]] == 0).all())


def test_apply_uses_new_masks_when_the_dict_is_replaced():
    params = {"w": torch.nn.Parameter(torch.arange(1.0, 7.0))}
    store = MaskStore(params, Pruner("global"))
    store.apply({"w": torch.tensor([True, True, True, True, False, False])})
    assert params["w"].tolist() == [1, 2, 3, 4, 0, 0]
    with torch.no_grad():
        params["w"].copy_(torch.arange(1.0, 7.0))
    store.apply({"w": torch.tensor([False, True, True, True, True, True])})  # a new round's dict: not the cache
    assert params["w"].tolist() == [0, 2, 3, 4, 5, 6]
    store.release()
    store.apply(None)
    store.apply({})
    assert params["w"].tolist() == [0, 2, 3, 4, 5, 6]


def test_apply_keeps_low_precision_dtypes():
    params = {"h": torch.nn.Parameter(torch.tensor([1.5, -2.0, 3.0], dtype=torch.bfloat16))}
    store = MaskStore(params, Pruner("global"))
    store.apply({"h": torch.tensor([True, False, True])})
    assert params["h"].dtype == torch.bfloat16 and params["h"].tolist() == [1.5, 0.0, 3.0]


def test_sparsity_densities_and_ones():
    params = {"a": torch.nn.Parameter(torch.ones(2, 5)), "b": torch.nn.Parameter(torch.ones(6))}
    store = MaskStore(params, Pruner("global"))
    ones = store.ones()
    assert list(ones) == ["a", "b"]
    assert all(m.dtype == torch.bool and bool(m.all()) and m.shape == params[n].shape for n, m in ones.items())
    assert store.sparsity(ones) == 0.0
    assert store.densities(ones) == {"a": (10, 10), "b": (6, 6)}
    masks = {"a": torch.tensor([[True] * 5, [False] * 5]), "b": torch.tensor([True, False, False, False, True, True])}
    assert store.sparsity(masks) == pytest.approx(8 / 16)
    assert store.densities(masks) == {"a": (5, 10), "b": (3, 6)}


def test_full_and_local_masks_are_identity_on_plain_parameters():
    params = _weights(_model())
    store = MaskStore(params, Pruner("global"))
    masks = store.compute(None, 0.3, final=False)
    assert store.full_masks(masks) is masks
    local = store.local_masks(masks)
    assert local.keys() == masks.keys()
    assert all(torch.equal(local[n], masks[n]) and local[n].device == params[n].device for n in masks)
    full = store.broadcast_full(masks)  # single process: a copy of the dict, same masks
    assert full is not masks and all(full[n] is masks[n] for n in masks)


def test_snapshot_rewind_round_trip():
    model = _model(4)
    params = dict(model.named_parameters())
    store = MaskStore(_weights(model), Pruner("global"))
    theta0 = {n: p.detach().clone() for n, p in params.items()}
    snap = store.snapshot(params, "cpu")
    assert snap.keys() == params.keys()
    assert all(snap[n].data_ptr() != p.data_ptr() for n, p in params.items())  # a copy, not an alias
    with torch.no_grad():
        for p in params.values():
            p.mul_(-3).add_(1)
    store.rewind(params, snap)
    assert all(torch.equal(params[n], theta0[n]) for n in params)
    # a snapshot of part of the model rewinds only that part
    part = store.snapshot({"0.weight": params["0.weight"]}, "cpu")
    with torch.no_grad():
        params["0.weight"].zero_()
        params["0.bias"].zero_()
    store.rewind(params, part)
    assert torch.equal(params["0.weight"], theta0["0.weight"]) and not params["0.bias"].any()
    assert store.full_snapshot(snap, params) is snap
    local = store.local_snapshot(snap, params, "cpu")
    assert all(torch.equal(local[n], snap[n]) for n in snap)


def test_mask_store_for_plain_parameters_and_named_parameters():
    model = _model()
    params = named_parameters(model)
    assert list(params) == [n for n, _ in model.named_parameters()]
    assert all(params[n] is p for n, p in model.named_parameters())
    store = mask_store_for(_weights(model), Pruner("global"), cpu_float_masks=False)
    assert type(store) is MaskStore and not store.sharded and store.describe() == ""
    assert store.cpu_float_masks is False and list(store.params) == list(_weights(model))


def test_sharded_store_refuses_structured_granularity():
    with pytest.raises(ValueError, match=r"granularity='heads' is not supported on sharded \(FSDP2\) parameters"):
        ShardedMaskStore({"w": torch.nn.Parameter(torch.ones(2, 2))}, Pruner("heads"))
