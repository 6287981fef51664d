import pytest
import torch
import torch.nn.utils.prune as prune
from torch import nn

import lightning_tickets.masks as M
from lightning_tickets.masks import (
    compute_masks,
    global_magnitude_masks,
    layerwise_magnitude_masks,
    num_to_prune,
    random_masks,
    select_lowest,
    sparsity_of,
)


def _layers(seed=0):
    torch.manual_seed(seed)
    return [nn.Linear(50, 30), nn.Linear(30, 70), nn.Linear(70, 5), nn.Linear(5, 1)]


@pytest.mark.parametrize("chunk", [M._CHUNK, 7])
def test_global_mask_equals_torch_prune_over_rounds(monkeypatch, chunk):
    """Oracle: torch.nn.utils.prune.global_unstructured with L1Unstructured, applied round after round."""
    monkeypatch.setattr(M, "_CHUNK", chunk)  # 7 forces many chunk boundaries
    ours_layers, ref_layers = _layers(), _layers()
    params = {f"l{i}": m.weight for i, m in enumerate(ours_layers)}
    total = sum(p.numel() for p in params.values())
    masks = None
    for s in [0.2, 0.36, 0.488, 0.7, 0.9, 0.95]:
        already = sum(int((getattr(m, "weight_mask", torch.ones(1)) == 0).sum()) for m in ref_layers)
        prune.global_unstructured(
            [(m, "weight") for m in ref_layers], pruning_method=prune.L1Unstructured, amount=round(s * total) - already
        )
        masks = global_magnitude_masks(params, masks, s)
        for i, m in enumerate(ref_layers):
            assert torch.equal(masks[f"l{i}"], m.weight_mask.bool()), (s, i)
        assert sum(int((~m).sum()) for m in masks.values()) == round(s * total)


def test_pruned_weights_stay_pruned_even_if_large():
    w = {"a": torch.tensor([5.0, 0.1, 0.2, 0.3])}
    first = {"a": torch.tensor([False, True, True, True])}  # the largest weight was pruned before
    m = global_magnitude_masks(w, first, 0.5)
    assert m["a"].tolist() == [False, False, True, True]


def test_ties_broken_by_tensor_then_index_and_count_exact():
    w = {"a": torch.tensor([1.0, 1.0, 1.0, 2.0]), "b": torch.tensor([1.0, 0.5, 1.0])}
    m = global_magnitude_masks(w, None, 3 / 7)
    assert m["a"].tolist() == [False, False, True, True]
    assert m["b"].tolist() == [True, False, True]
    # all equal: the first k go
    m = global_magnitude_masks({"x": torch.ones(10)}, None, 0.3)
    assert m["x"].tolist() == [False] * 3 + [True] * 7


def test_sign_is_ignored_and_negative_zero_counts_as_zero():
    m = global_magnitude_masks({"a": torch.tensor([-3.0, 1.0, -0.0, 2.0])}, None, 0.5)
    assert m["a"].tolist() == [True, False, False, True]


def test_exact_count_on_random_sizes():
    g = torch.Generator().manual_seed(3)
    params = {f"t{i}": torch.randn(int(n), generator=g) for i, n in enumerate(torch.randint(1, 500, (6,), generator=g))}
    total = sum(p.numel() for p in params.values())
    for s in [0.01, 0.333, 0.5, 0.77, 0.999]:
        m = global_magnitude_masks(params, None, s)
        assert sum(int((~x).sum()) for x in m.values()) == num_to_prune(total, s)
        kept_min = min(params[n][x].abs().min() for n, x in m.items() if x.any())
        pruned_max = max(params[n][~x].abs().max() for n, x in m.items() if (~x).any())
        assert kept_min >= pruned_max


def test_layerwise_exact_per_tensor_and_matches_prune():
    layers = _layers(1)
    params = {f"l{i}": m.weight for i, m in enumerate(layers)}
    m = layerwise_magnitude_masks(params, None, 0.6)
    for i, layer in enumerate(layers):
        ref = nn.Linear(1, 1)
        ref.weight = nn.Parameter(layer.weight.detach().clone())
        prune.l1_unstructured(ref, "weight", amount=0.6)
        assert torch.equal(m[f"l{i}"], ref.weight_mask.bool())
        assert int((~m[f"l{i}"]).sum()) == round(0.6 * layer.weight.numel())


def test_random_masks_exact_reproducible_and_not_magnitude():
    params = {f"l{i}": m.weight for i, m in enumerate(_layers(2))}
    total = sum(p.numel() for p in params.values())
    a = random_masks(params, None, 0.7, generator=torch.Generator().manual_seed(0))
    b = random_masks(params, None, 0.7, generator=torch.Generator().manual_seed(0))
    c = global_magnitude_masks(params, None, 0.7)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert sum(int((~x).sum()) for x in a.values()) == round(0.7 * total)
    assert not all(torch.equal(a[n], c[n]) for n in a)
    lw = random_masks(params, None, 0.5, granularity="layerwise", generator=torch.Generator().manual_seed(1))
    assert all(int((~lw[n]).sum()) == round(0.5 * p.numel()) for n, p in params.items())
    # iterating keeps the old pruned entries pruned
    a2 = random_masks(params, a, 0.8, generator=torch.Generator().manual_seed(5))
    assert all(not (a2[n] & ~a[n]).any() for n in a)


def test_compute_masks_dispatch_and_errors():
    params = {"w": torch.randn(10)}
    assert sparsity_of(compute_masks(params, None, 0.3)) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="method='snip' is unknown"):
        compute_masks(params, None, 0.3, method="snip")
    with pytest.raises(ValueError, match="granularity='rows' is unknown"):
        compute_masks(params, None, 0.3, granularity="rows")
    with pytest.raises(ValueError, match="sparsity can only grow"):
        global_magnitude_masks(params, global_magnitude_masks(params, None, 0.5), 0.2)
    with pytest.raises(ValueError, match="outside"):
        global_magnitude_masks(params, None, 1.0)
    with pytest.raises(ValueError, match="NaN, inf or a negative"):
        global_magnitude_masks({"w": torch.tensor([1.0, float("nan"), 2.0])}, None, 0.5)
    with pytest.raises(ValueError, match="NaN, inf or a negative"):
        select_lowest([torch.tensor([-1.0, 2.0])], [torch.ones(2, dtype=torch.bool)], 1)


def test_half_precision_weights():
    w = torch.randn(100).to(torch.bfloat16)
    m = global_magnitude_masks({"w": w}, None, 0.4)
    assert int((~m["w"]).sum()) == 40
    assert w.float().abs()[m["w"]].min() >= w.float().abs()[~m["w"]].max()
