import threading

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


# ---------------------------------------------------------------------------------------------------------------
# Exactness of the chunked radix select against independent oracles, on every code path:
#   "collect": the boundary bin's entries are gathered in pass 2 (the usual path);
#   "crowded": the boundary bin is counted in a third pass and the masks written in a final pass (many ties).
# Small chunk sizes put chunk boundaries everywhere, including inside runs of tied values.

PATHS = {
    "collect": {"_MIN_CANDIDATES": 1 << 40, "_MAX_CANDIDATE_FRACTION": 1.0},
    "crowded": {"_MIN_CANDIDATES": 0, "_MAX_CANDIDATE_FRACTION": 0.0},
}


@pytest.fixture(params=[(path, chunk) for path in PATHS for chunk in (1, 7, 64, M._CHUNK)], ids=str)
def select_path(request, monkeypatch):
    path, chunk = request.param
    for name, value in PATHS[path].items():
        monkeypatch.setattr(M, name, value)
    monkeypatch.setattr(M, "_CHUNK", chunk)
    return request.param


def _sort_oracle(params, masks, sparsity):
    """Concatenate |w| of the kept weights, stable sort, prune the first k (ties in tensor, then index order)."""
    flat = torch.cat([p.detach().abs().double().reshape(-1) for p in params.values()])
    alive = (
        torch.ones_like(flat, dtype=torch.bool) if masks is None else torch.cat([masks[n].reshape(-1) for n in params])
    )
    k = round(sparsity * flat.numel()) - int((~alive).sum())
    vals = flat.masked_fill(~alive, float("inf"))
    keep = alive.clone()
    keep[torch.sort(vals, stable=True).indices[:k]] = False
    return _split(keep, params)


def _kthvalue_oracle(params, sparsity):
    """Concatenate |w|, kthvalue, then prune the tied weights in (tensor, flat index) order up to exactly k."""
    flat = torch.cat([p.detach().abs().reshape(-1) for p in params.values()])
    k = round(sparsity * flat.numel())
    if k == 0:
        return _split(torch.ones_like(flat, dtype=torch.bool), params)
    thr = flat.kthvalue(k).values
    keep = flat > thr
    tied = (flat == thr).nonzero().squeeze(1)
    keep[tied[k - int((flat < thr).sum()) :]] = True
    return _split(keep, params)


def _split(flat_mask, params):
    out, start = {}, 0
    for name, p in params.items():
        out[name] = flat_mask[start : start + p.numel()].reshape(p.shape)
        start += p.numel()
    return out


def _assert_same(got, ref):
    assert got.keys() == ref.keys()
    for n in ref:
        assert got[n].dtype == torch.bool and got[n].shape == ref[n].shape, n
        assert torch.equal(got[n], ref[n]), n


def _tied_params(seed=0):
    """Random weights with many exact ties (rounded values, repeated blocks, zeros, -0.0) and an empty tensor."""
    g = torch.Generator().manual_seed(seed)
    params = {
        "a": (torch.randn(300, generator=g) * 4).round() / 4,  # only a few distinct magnitudes: huge tie blocks
        "b": torch.randn(17, 13, generator=g),
        "empty": torch.zeros(0),
        "c": torch.zeros(50),
        "d": torch.full((40,), -0.5),
        "e": torch.randn(129, generator=g),
    }
    params["e"][::3] = 0.5
    params["b"][2] = -0.0
    return params


@pytest.mark.parametrize("sparsity", [0.0, 0.01, 0.1, 0.25, 0.33, 0.5, 0.61, 0.9, 0.999])
def test_global_matches_sort_and_kthvalue_oracles_with_ties(select_path, sparsity):
    params = _tied_params()
    got = global_magnitude_masks(params, None, sparsity)
    _assert_same(got, _sort_oracle(params, None, sparsity))
    _assert_same(got, _kthvalue_oracle(params, sparsity))
    total = sum(p.numel() for p in params.values())
    assert sum(int((~m).sum()) for m in got.values()) == round(sparsity * total)


def test_rounds_with_unzeroed_pruned_weights_match_oracle(select_path):
    """Iterative rounds; pruned weights keep their (possibly large) values and must stay pruned."""
    params = _tied_params(1)
    params["b"][0, :5] = 100.0
    masks = None
    for s in [0.1, 0.3, 0.3, 0.55, 0.8, 0.95]:
        ref = _sort_oracle(params, masks, s)
        masks = global_magnitude_masks(params, masks, s)
        _assert_same(masks, ref)


def test_all_equal_and_all_zero_tensors(select_path):
    for value in (0.0, -0.0, 1.0, -3.5):
        params = {"x": torch.full((100,), value), "y": torch.full((3, 11), value)}
        for s in (0.0, 0.3, 0.5, 0.99):
            got = global_magnitude_masks(params, None, s)
            k = round(s * 133)
            flat = torch.cat([got["x"], got["y"].reshape(-1)])
            assert flat.tolist() == [False] * k + [True] * (133 - k)  # the first k in tensor, index order


def test_prune_every_alive_entry_and_k_zero(select_path):
    scores = [torch.rand(50), torch.rand(3, 4)]
    alive = [torch.rand(50) > 0.5, None]
    n_alive = int(alive[0].sum()) + 12
    assert not any(m.any() for m in select_lowest(scores, alive, n_alive))
    same = select_lowest(scores, alive, 0)
    assert torch.equal(same[0], alive[0]) and bool(same[1].all())
    with pytest.raises(ValueError, match="cannot prune"):
        select_lowest(scores, alive, n_alive + 1)


def test_sparsity_zero_keeps_everything_and_one_is_refused():
    params = _tied_params()
    assert all(bool(m.all()) for m in global_magnitude_masks(params, None, 0.0).values())
    with pytest.raises(ValueError, match="outside"):
        global_magnitude_masks(params, None, 1.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes_match_oracle(select_path, dtype):
    """Half types convert to float32 exactly; float64 is ranked at float32 precision (exact when the float32 values
    are distinct or equal exactly when the float64 ones are, as here)."""
    g = torch.Generator().manual_seed(4)
    params = {"h": (torch.randn(200, generator=g) * 8).round().to(dtype) / 8, "f": torch.randn(77, generator=g)}
    params["f"] = params["f"].to(dtype)
    for s in (0.2, 0.5, 0.87):
        _assert_same(global_magnitude_masks(params, None, s), _sort_oracle(params, None, s))


def test_non_contiguous_weights(select_path):
    g = torch.Generator().manual_seed(5)
    params = {"t": torch.randn(30, 20, generator=g).t(), "s": torch.randn(40, generator=g)[::2]}
    for s in (0.3, 0.75):
        _assert_same(global_magnitude_masks(params, None, s), _sort_oracle(params, None, s))


def test_layerwise_matches_oracle_per_tensor(select_path):
    params = _tied_params(2)
    got = layerwise_magnitude_masks(params, None, 0.45)
    for name, p in params.items():
        _assert_same({name: got[name]}, _sort_oracle({name: p}, None, 0.45))


def test_non_absolute_scores_and_invalid_values(select_path):
    g = torch.Generator().manual_seed(6)
    scores = [torch.rand(100, generator=g), (torch.rand(30, generator=g) * 4).floor()]
    flat = torch.cat(scores)
    for k in (1, 37, 70, 130):
        got = torch.cat(select_lowest(scores, [None, None], k))
        ref = torch.ones_like(flat, dtype=torch.bool)
        ref[torch.sort(flat, stable=True).indices[:k]] = False
        assert torch.equal(got, ref), k
    for bad in (float("nan"), float("inf"), -1.0, -0.0):
        with pytest.raises(ValueError, match="NaN, inf or a negative"):
            select_lowest([torch.tensor([1.0, bad, 2.0])], [None], 1)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="NaN, inf or a negative"):
            global_magnitude_masks({"w": torch.tensor([1.0, bad, -2.0])}, None, 0.3)
    # a bad value in an already-pruned entry is ignored
    got = select_lowest([torch.tensor([1.0, float("nan"), 2.0, 0.5])], [torch.tensor([True, False, True, True])], 1)
    assert got[0].tolist() == [True, False, True, False]


def test_large_random_against_kthvalue(monkeypatch):
    """A million weights with the default chunking (several chunks per tensor, collect path) and a crowded bin."""
    g = torch.Generator().manual_seed(7)
    params = {f"w{i}": torch.randn(n, generator=g) for i, n in enumerate([400_000, 70_001, 530_000])}
    params["w1"][:5000] = 0.75  # a block of ties, likely near the 50% threshold
    for s in (0.5, 0.7):
        _assert_same(global_magnitude_masks(params, None, s), _kthvalue_oracle(params, s))
    monkeypatch.setattr(M, "_MIN_CANDIDATES", 0)
    monkeypatch.setattr(M, "_MAX_CANDIDATE_FRACTION", 0.0)
    _assert_same(global_magnitude_masks(params, None, 0.7), _kthvalue_oracle(params, 0.7))


class _FakeGroup:
    """In-process stand-in for a process group: each rank runs in a thread; collectives meet at a barrier."""

    def __init__(self, world: int) -> None:
        self.barrier = threading.Barrier(world, timeout=60)
        self.slots: list = [None] * world

    def _exchange(self, rank, value):
        self.slots[rank] = value
        self.barrier.wait()
        got = list(self.slots)
        self.barrier.wait()
        return got

    def reducers(self, rank):
        return {
            "all_reduce": lambda t: sum(x.clone() for x in self._exchange(rank, t)),
            "prefix_sum": lambda n: sum(self._exchange(rank, n)[:rank]),
        }


def test_sharded_reducers_equal_single_process_on_every_path(select_path):
    """The sharded path (histograms summed over 3 ranks, rank-ordered ties) on uneven shards, one empty,
    including a tensor split across ranks, against the single-process result on the concatenated shards."""
    params = _tied_params(3)
    shards = [
        {"a0": params["a"][:100], "b": params["b"]},
        {},
        {"a1": params["a"][100:], "c": params["c"], "d": params["d"], "e": params["e"]},
    ]
    ordered = {k: v for shard in shards for k, v in shard.items()}
    group = _FakeGroup(len(shards))
    results: list = [None] * len(shards)
    errors: list = []

    def run(rank):
        try:
            masks, out = None, []
            for s in (0.2, 0.4, 0.61, 0.9):
                masks = global_magnitude_masks(shards[rank], masks, s, **group.reducers(rank))
                out.append(masks)
            results[rank] = out
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            group.barrier.abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(len(shards))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    ref = None
    for i, s in enumerate((0.2, 0.4, 0.61, 0.9)):
        ref = global_magnitude_masks(ordered, ref, s)
        _assert_same({k: v for r in results for k, v in r[i].items()}, ref)
        _assert_same(ref, _sort_oracle(ordered, None, s))  # (no round has a tie crossing rounds here)
