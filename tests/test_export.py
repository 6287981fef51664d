"""Export: compact models (heads / neurons removed with torch-pruning) compute what the masked model computes, prune
plans round-trip through JSON and rebuild the model without torch-pruning, N:M export skips cleanly on CPU."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch

from lightning_tickets.backbones import Lxmert, Uniter, Vilt
from lightning_tickets.export import PrunePlan, compact, rebuild, semi_structured_support, to_semi_structured
from lightning_tickets.scope import resolve_scope
from lightning_tickets.structured import nm_round_masks, structured_masks, unit_alive
from lightning_tickets.ticket import Ticket

sys.path.insert(0, str(Path(__file__).parent))
from test_lxmert_vilt import _lx_batch, _vilt_batch  # noqa: E402
from test_uniter import _batch as _uniter_batch  # noqa: E402

# float32, same weights, smaller matmuls: only the summation order changes. Measured max |diff| ~2.4e-7.
TOL = dict(atol=1e-5, rtol=1e-5)

BACKBONES = {
    "uniter": (lambda: Uniter("tiny", img_dim=12), _uniter_batch),
    "lxmert": (lambda: Lxmert("tiny", img_dim=12), _lx_batch),
    "vilt": (lambda: Vilt("tiny"), _vilt_batch),
}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return BACKBONES[name][0]().eval()


def _structured_ticket(model, sparsity=0.5, granularity="heads+neurons") -> Ticket:
    params = dict(resolve_scope(model, "encoder"))
    return Ticket(structured_masks(params, model.structure().restricted(params), None, sparsity, granularity))


def _outputs(model, batch):
    with torch.no_grad():
        out = model(batch)
    return out.sequence[out.attention_mask], out.pooled


def _masked(model, ticket):
    masked = copy.deepcopy(model)
    ticket.apply(masked)
    return masked


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_compact_equals_masked_model(name):
    model = _model(name)
    ticket = _structured_ticket(model)
    small, plan = compact(model, ticket)
    assert plan.metadata["sliced"] == []  # torch-pruning handled every block
    batch = BACKBONES[name][1]()
    for a, b in zip(_outputs(_masked(model, ticket), batch), _outputs(small, batch)):
        torch.testing.assert_close(b, a, **TOL)
    kept, total = plan.summary()["heads"]
    assert kept == total // 2
    # the model really is smaller, and the head attributes follow
    n_before = sum(p.numel() for p in model.parameters())
    n_after = sum(p.numel() for p in small.parameters())
    assert n_after < n_before
    for block in small.structure().attention:
        core = small.get_submodule(block.core)
        entry = plan.attention[block.name]
        assert core.num_attention_heads == len(entry.kept) == block.num_heads
        width = getattr(core, "all_head_size", None) or core.head_size
        assert width == len(entry.kept) * entry.head_size == small.get_submodule(block.query).out_features
        assert small.get_submodule(block.output).in_features == width
        assert core.attention_head_size == entry.head_size  # head size (hence scaling) unchanged
    for ffn in small.structure().ffn:
        assert small.get_submodule(ffn.input).out_features == len(plan.ffn[ffn.name].kept)
    assert small.hidden_size == model.hidden_size
    # the original model is untouched (deep copy)
    assert sum(p.numel() for p in model.parameters()) == n_before


@pytest.mark.parametrize("name", ["uniter", "lxmert"])
def test_plan_save_load_rebuild_round_trip(name, tmp_path):
    model = _model(name)
    small, plan = compact(model, _structured_ticket(model, 0.25))
    path = plan.save(tmp_path / "plan.json")
    loaded = PrunePlan.load(path)
    assert loaded.to_dict() == plan.to_dict()
    assert json.loads(path.read_text())["format"] == "lightning-tickets/prune-plan"
    rebuilt = rebuild(BACKBONES[name][0](), path, small.state_dict()).eval()
    batch = BACKBONES[name][1]()
    for a, b in zip(_outputs(small, batch), _outputs(rebuilt, batch)):
        torch.testing.assert_close(b, a, atol=0, rtol=0)
    with pytest.raises(ValueError, match="original"):
        rebuild(rebuilt, loaded, small.state_dict())  # already compact
    with pytest.raises(ValueError, match="not a prune plan"):
        PrunePlan.from_dict({"format": "something else"})


def test_torch_pruning_and_direct_slicing_agree():
    model = _model("vilt")
    ticket = _structured_ticket(model)
    a, _ = compact(model, ticket)
    b, _ = compact(model, ticket, use_torch_pruning=False)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_unstructured_ticket_removes_exactly_the_dead_units_and_stays_exact():
    model = _model("uniter")
    params = dict(resolve_scope(model, "encoder"))
    masks = {n: p.detach().abs() > p.detach().abs().median() for n, p in params.items()}  # unstructured, ~50 %
    block = model.structure().attention[1]
    out = masks[f"{block.output}.weight"].clone()
    out[:, block.head_size : 2 * block.head_size] = False  # head 1 of layer 1: its output columns are gone
    masks[f"{block.output}.weight"] = out
    ffn = model.structure().ffn[0]
    down = masks[f"{ffn.output}.weight"].clone()
    down[:, [3, 7]] = False  # neurons 3 and 7 of layer 0 write nothing
    masks[f"{ffn.output}.weight"] = down
    ticket = Ticket(masks)
    small, plan = compact(model, ticket)
    assert plan.attention[block.name].kept == [0, 2, 3]
    assert plan.summary()["heads"] == [7, 8]
    assert 3 not in plan.ffn[ffn.name].kept and 7 not in plan.ffn[ffn.name].kept
    batch = _uniter_batch()
    for a, b in zip(_outputs(_masked(model, ticket), batch), _outputs(small, batch)):
        torch.testing.assert_close(b, a, **TOL)


def test_fractions_score_units_by_ticket_density():
    model = _model("uniter")
    structure = model.structure()
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in resolve_scope(model, "encoder")}
    # densities: layer 0 head 2 keeps 10% of its query rows, layer 1 head 0 keeps half of its key rows
    b0, b1 = structure.attention
    q = masks[f"{b0.query}.weight"]
    q[2 * b0.head_size : 3 * b0.head_size, 3:] = False
    k = masks[f"{b1.key}.weight"]
    k[0 : b1.head_size, :16] = False
    small, plan = compact(model, masks, heads=0.25)  # 2 of 8 heads: the two least dense
    assert plan.attention[b0.name].kept == [0, 1, 3] and plan.attention[b1.name].kept == [1, 2, 3]
    with pytest.raises(ValueError, match=r"heads=0\.9.*at most 6"):
        compact(model, masks, heads=0.9)
    # without a ticket: magnitude, one-shot
    _, plan = compact(model, neurons=0.5)
    assert plan.summary()["neurons"] == [64, 128]


def test_compact_inside_a_task_module_with_prefixed_ticket_names():
    torch.manual_seed(0)
    wrapper = torch.nn.ModuleDict({"backbone": Uniter("tiny", img_dim=12), "head": torch.nn.Linear(32, 2)}).eval()
    ticket = _structured_ticket(wrapper["backbone"], 0.5, "heads")
    prefixed = Ticket({f"backbone.{n}": m for n, m in ticket.masks.items()})
    small, plan = compact(wrapper, prefixed)
    assert next(iter(plan.attention)).startswith("backbone.encoder.layer.0")
    assert plan.summary()["heads"] == [4, 8]
    batch = _uniter_batch()
    ref = _masked(wrapper["backbone"], ticket)
    torch.testing.assert_close(small["backbone"](batch).pooled, ref(batch).pooled, **TOL)


def test_structured_ticket_keeps_masks_consistent_with_plan():
    model = _model("lxmert")
    ticket = _structured_ticket(model, 0.5, "heads")
    _, plan = compact(model, ticket)
    for block in model.structure().attention:
        alive = unit_alive(ticket.masks, block)
        assert plan.attention[block.name].kept == torch.nonzero(alive).squeeze(1).tolist()
    assert plan.summary()["neurons"][0] == plan.summary()["neurons"][1]  # heads only: every neuron kept


def test_semi_structured_export_skips_cleanly_without_a_supporting_gpu():
    model = _model("uniter")
    params = dict(resolve_scope(model, "encoder"))
    Ticket(nm_round_masks(params, None, 0.5, 2, 4, final=True)).apply(model)
    reason = semi_structured_support()
    if reason:
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.warns(UserWarning, match="nothing converted"):
            report = to_semi_structured(model)
        assert report.converted == [] and report.reason == reason
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    else:  # pragma: no cover - needs an Ampere+ GPU
        model = model.half().cuda()
        report = to_semi_structured(model)
        assert report.converted or report.skipped
