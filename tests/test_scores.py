"""Importance scores (magnitude / random / LAMP / Taylor / callable) and min_density, against independent oracles."""

from __future__ import annotations

import doctest
import math
from pathlib import Path

import pytest
import torch
import torch.nn.utils.prune as prune
from torch import nn

from lightning_tickets.layout import MaskStore, ShardedMaskStore
from lightning_tickets.masks import compute_masks, global_magnitude_masks
from lightning_tickets.pruner import Pruner
from lightning_tickets.scores import (
    accumulate_taylor,
    collapse_message,
    collapsed_tensors,
    density_facts,
    density_floor,
    guarded_masks,
    lamp_scores,
    resolve_score,
    score_tensors,
)
from lightning_tickets.toy import ToyClassifier, ToyDataModule


# ------------------------------------------------------------------------------------------------------- oracles
def _lamp_bruteforce(w: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """The LAMP definition, weight by weight: order by (|w|, flat index); score(u) = w_u^2 / sum over v >= u."""
    flat = w.detach().double().reshape(-1).clone()
    if keep is not None:
        flat[~keep.reshape(-1)] = 0.0
    out = torch.zeros_like(flat)
    for u in range(flat.numel()):
        if flat[u] == 0:
            continue
        key_u = (abs(float(flat[u])), u)
        denom = sum(float(flat[v]) ** 2 for v in range(flat.numel()) if (abs(float(flat[v])), v) >= key_u)
        out[u] = float(flat[u]) ** 2 / denom
    return out.float().reshape(w.shape)


def _greedy_oracle(scores, alive, sparsity, min_density=0.0):
    """Walk all alive weights in (score, tensor order, flat index) order and prune each unless its tensor is at its
    floor, until round(sparsity * N) weights in total are pruned (python loop, no shared code with the library)."""
    names = list(scores)
    total = sum(scores[n].numel() for n in names)
    keep = {n: (torch.ones_like(scores[n], dtype=torch.bool) if alive is None else alive[n].clone()) for n in names}
    k = round(sparsity * total) - sum(int((~keep[n]).sum()) for n in names)
    entries = []
    for t, n in enumerate(names):
        flat = scores[n].reshape(-1).float()  # the library ranks float32 keys
        for i in range(flat.numel()):
            if keep[n].reshape(-1)[i]:
                entries.append((float(flat[i]), t, i))
    entries.sort()
    left = {n: int(keep[n].sum()) for n in names}
    floor = {n: math.ceil(round(min_density * scores[n].numel(), 6)) for n in names}
    for _, t, i in entries:
        if k == 0:
            break
        n = names[t]
        if left[n] > floor[n]:
            keep[n].view(-1)[i] = False
            left[n] -= 1
            k -= 1
    assert k == 0, "oracle could not prune enough"
    return keep


def _assert_masks_equal(got, ref):
    assert list(got) == list(ref)
    for n in ref:
        assert got[n].dtype == torch.bool and torch.equal(got[n], ref[n]), n


def _params(seed=0, ties=True):
    g = torch.Generator().manual_seed(seed)
    params = {
        "a": torch.randn(7, 9, generator=g),
        "tiny": torch.randn(40, generator=g) * 1e-3,  # a never-trained layer: emptied first by global magnitude
        "b": torch.randn(33, generator=g),
    }
    if ties:
        params["a"][0] = 0.5
        params["b"][::4] = -0.5
        params["b"][1] = 0.0
    return params


# --------------------------------------------------------------------------------------------------------- LAMP
def test_lamp_scores_equal_the_definition_with_ties_zeros_and_pruned_weights():
    w = torch.tensor([[0.3, -0.1, 0.3], [0.0, 2.0, -0.3], [0.1, 0.7, -2.0]])
    keep = torch.ones_like(w, dtype=torch.bool)
    keep[0, 2] = False
    for k in (None, keep):
        got = lamp_scores(w, k)
        assert torch.allclose(got, _lamp_bruteforce(w, k), rtol=1e-6, atol=0)
        kept = w.abs() if k is None else w.abs() * k
        # the largest kept weight (the last of equal maxima in flat order) scores exactly 1, all others <= 1/2
        last_max = (kept.reshape(-1) == kept.max()).nonzero().max()
        assert got.reshape(-1)[last_max] == 1.0 and (got.reshape(-1) <= 1.0).all()
        assert (got.reshape(-1)[torch.arange(9) != last_max] <= 0.5).all()
    assert torch.equal(lamp_scores(torch.zeros(5)), torch.zeros(5))
    g = torch.Generator().manual_seed(3)
    r = torch.randn(50, 4, generator=g)
    assert torch.allclose(lamp_scores(r), _lamp_bruteforce(r), rtol=1e-5, atol=0)


@pytest.mark.parametrize("sparsity", [0.2, 0.5, 0.8, 0.95])
def test_lamp_masks_equal_torch_prune_with_lamp_importance(sparsity):
    """Oracle: torch.nn.utils.prune.global_unstructured with importance_scores = the brute-force LAMP scores."""
    params = _params(ties=False)
    got = guarded_masks(score_tensors("lamp", params, None), None, sparsity)
    modules = {n: nn.Linear(1, 1) for n in params}
    for n, m in modules.items():
        m.weight = nn.Parameter(params[n].clone())
    prune.global_unstructured(
        [(m, "weight") for m in modules.values()],
        pruning_method=prune.L1Unstructured,
        importance_scores={(m, "weight"): _lamp_bruteforce(params[n]) for n, m in modules.items()},
        amount=round(sparsity * sum(p.numel() for p in params.values())),
    )
    _assert_masks_equal(got, {n: m.weight_mask.bool() for n, m in modules.items()})
    assert sum(int((~m).sum()) for m in got.values()) == round(sparsity * 136)


def test_lamp_over_rounds_with_ties_matches_greedy_oracle_and_never_empties_a_tensor():
    params = _params()
    masks = None
    for s in (0.3, 0.6, 0.9, 0.97, 0.98):  # 136 weights, 3 tensors: 0.98 keeps 3
        scores = score_tensors("lamp", params, masks)
        ref = _greedy_oracle({n: _lamp_bruteforce(p, None if masks is None else masks[n]) for n, p in params.items()},
                             masks, s)  # fmt: skip
        new = guarded_masks(scores, masks, s)
        _assert_masks_equal(new, ref)
        assert all(int(m.sum()) >= 1 for m in new.values()), s
        masks = new
    magnitude = global_magnitude_masks(params, None, 0.5)
    assert int(magnitude["tiny"].sum()) == 0  # what LAMP prevents


# ---------------------------------------------------------------------------------------------------- min_density
@pytest.mark.parametrize("score", ["magnitude", "lamp", "random"])
@pytest.mark.parametrize("min_density", [0.01, 0.1, 0.3])
def test_min_density_matches_greedy_oracle_over_rounds(score, min_density):
    params = _params()
    total = sum(p.numel() for p in params.values())
    masks = None
    pruner = Pruner("global", score=score, min_density=min_density, generator=torch.Generator().manual_seed(4))
    draws = torch.Generator().manual_seed(4)
    for s in (0.25, 0.5, 0.65):
        if score == "random":
            oracle_scores = {n: torch.rand(p.shape, generator=draws) for n, p in params.items()}
        elif score == "lamp":
            oracle_scores = {n: _lamp_bruteforce(p, None if masks is None else masks[n]) for n, p in params.items()}
        else:
            oracle_scores = {n: p.abs() for n, p in params.items()}
        ref = _greedy_oracle(oracle_scores, masks, s, min_density)
        new = pruner(params, masks, s, final=False)
        _assert_masks_equal(new, ref)
        assert sum(int((~m).sum()) for m in new.values()) == round(s * total)
        for m in new.values():
            assert int(m.sum()) >= density_floor(m.numel(), min_density) >= 1
        masks = new
    if min_density == 0.3 and score == "magnitude":  # the floor bites: "tiny" keeps 12 of 40 instead of none
        assert int(masks["tiny"].sum()) == 12


def test_min_density_infeasible_and_invalid_values_refused():
    params = _params()
    pruner = Pruner("global", min_density=0.5)
    with pytest.raises(ValueError, match=r"min_density=0.5 needs 69 kept weights .* keeps 41 of 136"):
        pruner.prepare(nn.Module(), params, [0.0, 0.7])
    with pytest.raises(ValueError, match="must prune 95 more weights but only 39 can go"):
        guarded_masks(params, None, 0.7, min_density=0.7, absolute=True)
    with pytest.raises(ValueError, match=r"min_density=1.0 is outside \[0, 1\)"):
        Pruner("global", min_density=1.0)
    with pytest.raises(ValueError, match="applies to granularity='global' only"):
        Pruner("layerwise", min_density=0.1)
    assert density_floor(30, 0.1) == 3 and density_floor(31, 0.1) == 4 and density_floor(5, 0.01) == 1


# ------------------------------------------------------------------------------------------- random, callable
def test_random_score_is_the_random_method_bit_for_bit():
    params = _params()
    a = Pruner("global", score="random", generator=torch.Generator().manual_seed(7))
    b = Pruner("global", method="random", generator=torch.Generator().manual_seed(7))
    assert a.method == "random" and b.score == "random"
    ref = compute_masks(params, None, 0.6, "random", "global", torch.Generator().manual_seed(7))
    _assert_masks_equal(a(params, None, 0.6, False), ref)
    _assert_masks_equal(b(params, None, 0.6, False), ref)


def _importance(name, param):
    """A user score: |w| weighted per tensor (a module-level function, so it has a dotted path)."""
    return param.abs() * (10.0 if name == "tiny" else 1.0) + 0.0 * param


@pytest.mark.parametrize("granularity", ["global", "layerwise"])
def test_callable_score_equals_torch_prune_with_importance_scores(granularity):
    params = _params(ties=False)
    pruner = Pruner(granularity, score=_importance)
    got = pruner(params, None, 0.6, final=False)
    modules = {n: nn.Linear(1, 1) for n in params}
    for n, m in modules.items():
        m.weight = nn.Parameter(params[n].clone())
    if granularity == "global":
        importance = {(m, "weight"): _importance(n, params[n]) for n, m in modules.items()}
        prune.global_unstructured([(m, "weight") for m in modules.values()], pruning_method=prune.L1Unstructured,
                                  importance_scores=importance, amount=round(0.6 * 136))  # fmt: skip
    else:
        for n, m in modules.items():
            prune.l1_unstructured(m, "weight", amount=0.6, importance_scores=_importance(n, params[n]))
    _assert_masks_equal(got, {n: m.weight_mask.bool() for n, m in modules.items()})
    assert pruner.score_name == "test_scores._importance"
    assert resolve_score("test_scores._importance") is _importance


def test_callable_score_errors_name_the_tensor_and_the_fix():
    params = _params()
    with pytest.raises(ValueError, match=r"returned \(3,\) for 'a'; expected a tensor of shape \(7, 9\)"):
        Pruner("global", score=lambda n, p: torch.ones(3))(params, None, 0.5, False)
    with pytest.raises(ValueError, match="NaN, inf or negative values for 'a'.*return .abs"):
        Pruner("global", score=lambda n, p: p)(params, None, 0.5, False)
    with pytest.raises(ValueError, match="score='snip' is unknown; use one of 'magnitude', 'random', 'lamp'"):
        Pruner("global", score="snip")
    with pytest.raises(ValueError, match="cannot import 'nope'"):
        resolve_score("math.nope")
    with pytest.raises(ValueError, match="method='random' is score='random'"):
        Pruner("global", method="random", score="lamp")
    with pytest.raises(ValueError, match="score='lamp' applies to granularity 'global' or 'layerwise'"):
        Pruner("heads", score="lamp")
    # a score of -0.0 is zero, not negative
    got = Pruner("global", score=lambda n, p: -torch.zeros_like(p))(params, None, 0.5, False)
    assert sum(int((~m).sum()) for m in got.values()) == 68


def test_sharded_layout_refuses_scores_it_cannot_compute():
    w = {"w": nn.Parameter(torch.randn(4, 4))}
    for pruner, what in [
        (Pruner("global", score="lamp"), "score='lamp'"),
        (Pruner("global", score="taylor"), "score='taylor'"),
        (Pruner("global", score=_importance), "score='test_scores._importance'"),
        (Pruner("global", min_density=0.1), "min_density=0.1"),
    ]:
        with pytest.raises(ValueError, match=f"{what} is not supported on sharded \\(FSDP2\\) parameters yet"):
            ShardedMaskStore(w, pruner)
    store = ShardedMaskStore(w, Pruner("global", score="random"))  # supported
    masks = store.compute(None, 0.75, final=True)
    # per-tensor counts are summed over ranks (no gather); one process: the plain counts
    assert store.densities(masks) == MaskStore(w, Pruner("global")).densities(masks) == {"w": (4, 16)}


# ------------------------------------------------------------------------------------------------------- Taylor
def test_taylor_accumulates_w_times_grad_over_steps_and_selects_like_torch_prune():
    torch.manual_seed(0)
    model = ToyClassifier()
    dm = ToyDataModule(num_samples=128, batch_size=32)
    dm.setup("fit")
    params = {n: p for n, p in model.named_parameters() if n.endswith("dense.weight")}
    pruner = Pruner("global", score="taylor")
    assert pruner.needs_gradients and not Pruner("global").needs_gradients
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    oracle = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    for x, y in dm.train_dataloader():
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        for n, p in params.items():
            oracle[n] += (p.detach().double() * p.grad.double()).abs()
        pruner.observe(params)
        opt.step()
    assert set(pruner.sums) == set(params)
    for n in params:
        assert torch.allclose(pruner.sums[n].double(), oracle[n], rtol=1e-5, atol=1e-12), n
    sums = {n: s.clone() for n, s in pruner.sums.items()}
    got = pruner(params, None, 0.7, final=False)
    assert pruner.sums == {}  # the next round accumulates afresh
    modules = {n: nn.Linear(1, 1) for n in params}
    for n, m in modules.items():
        m.weight = nn.Parameter(params[n].detach().clone())
    total = sum(p.numel() for p in params.values())
    prune.global_unstructured([(m, "weight") for m in modules.values()], pruning_method=prune.L1Unstructured,
                              importance_scores={(m, "weight"): sums[n] for n, m in modules.items()},
                              amount=round(0.7 * total))  # fmt: skip
    _assert_masks_equal(got, {n: m.weight_mask.bool() for n, m in modules.items()})
    with pytest.raises(RuntimeError, match="no accumulated gradients"):
        pruner(params, got, 0.8, final=False)


def test_taylor_skips_missing_and_non_finite_gradients():
    a, b = nn.Parameter(torch.tensor([1.0, -2.0, 3.0])), nn.Parameter(torch.ones(2))
    a.grad = torch.tensor([0.5, float("inf"), -1.0])
    sums: dict = {}
    accumulate_taylor(sums, {"a": a, "b": b})
    accumulate_taylor(sums, {"a": a, "b": b})
    assert list(sums) == ["a"] and sums["a"].tolist() == [1.0, 0.0, 6.0]
    scores = score_tensors("taylor", {"a": a, "b": b}, None, sums=sums)
    assert scores["b"].tolist() == [0.0, 0.0]
    h = nn.Parameter(torch.tensor([1.5, -2.0], dtype=torch.bfloat16))
    h.grad = torch.tensor([2.0, 0.25], dtype=torch.bfloat16)
    accumulate_taylor(sums, {"h": h})
    assert sums["h"].dtype == torch.float32 and sums["h"].tolist() == [3.0, 0.5]  # half precision: float32 sums
    sums["a"] = torch.zeros(4)  # e.g. the run state of another model
    with pytest.raises(ValueError, match=r"Taylor scores of 'a' are \(4,\) torch.float32, but the parameter is \(3,\)"):
        accumulate_taylor(sums, {"a": a})
    with pytest.raises(ValueError, match="does not belong to this model"):
        score_tensors("taylor", {"a": a}, None, sums=sums)


# ---------------------------------------------------------------------------------------------- collapse facts
def test_collapse_is_relative_to_the_scope_density_and_names_the_tensor():
    # the MiniLM pooler at 70 % global sparsity: 10 of 147,456 kept
    dens = {"encoder.w": (300_000, 1_000_000), "pooler.dense.weight": (10, 147_456), "empty": (0, 0)}
    assert list(collapsed_tensors(dens, 0.05)) == ["pooler.dense.weight"]
    assert collapsed_tensors(dens, None) == {}
    uniform = {"a": (5, 1000), "b": (5, 1000)}  # 99.5 % layer-wise: nothing stands out
    assert collapsed_tensors(uniform, 0.05) == {}
    assert collapsed_tensors({"a": (0, 10), "b": (10, 10)}, 0.05) == {"a": 0.0}
    facts = density_facts(dens, 0.05)
    assert facts["sparsest_tensor"] == {"name": "pooler.dense.weight", "kept": 10, "total": 147_456,
                                        "density": 10 / 147_456}  # fmt: skip
    msg = collapse_message(dens, 0.05, 3)
    assert "round 3" in msg and "pooler.dense.weight keeps 10 of 147,456 weights" in msg and "score='lamp'" in msg
    many = {f"t{i}": (0, 10) for i in range(8)} | {"big": (100, 100)}
    assert "and 3 more" in collapse_message(many, 0.05, 1)


def test_docs_scores_page_examples_run():
    page = Path(__file__).resolve().parents[1] / "docs" / "scores.md"
    result = doctest.testfile(str(page), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8 and result.failed == 0
