"""Structured (heads / FFN neurons) and N:M masks: importance, global selection with a floor, exact N:M patterns,
errors for impossible requests, and IMP with the callback at these granularities."""

from __future__ import annotations

import itertools

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_tickets import LotteryTicketCallback
from lightning_tickets.backbones import Lxmert, Uniter, Vilt
from lightning_tickets.scope import resolve_scope
from lightning_tickets.structured import (
    AttentionBlock,
    FeedForward,
    Structure,
    find_structure,
    head_scores,
    neuron_scores,
    nm_mask,
    nm_round_masks,
    nm_schedule,
    nm_violations,
    parse_granularity,
    parse_nm,
    select_units,
    structured_masks,
    unit_alive,
)
from lightning_tickets.ticket import Ticket

# ---------------------------------------------------------------------------------------------- importance
BLOCK = AttentionBlock("att", "q", "k", "v", "o", "att", num_heads=2, head_size=2)


def _tiny_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(*s, generator=g) for n, s in {"q": (4, 3), "k": (4, 3), "v": (4, 3), "o": (3, 4)}.items()}


def test_head_importance_matches_hand_computation():
    w = _tiny_weights()
    expected = []
    for h in range(2):
        total = 0.0
        for name in "qkv":  # rows 2h, 2h+1 of q, k, v
            for r in (2 * h, 2 * h + 1):
                total += sum(abs(float(x)) for x in w[name][r])
        for r in range(3):  # columns 2h, 2h+1 of the output projection
            total += abs(float(w["o"][r, 2 * h])) + abs(float(w["o"][r, 2 * h + 1]))
        expected.append(total)
    got = head_scores({f"{k}.weight": v for k, v in w.items()}, BLOCK)
    assert got.tolist() == pytest.approx(expected, rel=1e-6)


def test_neuron_importance_matches_hand_computation():
    up = torch.tensor([[1.0, -2.0], [0.0, 0.5], [3.0, 3.0]])  # 3 neurons, hidden 2
    down = torch.tensor([[1.0, 0.0, -1.0], [0.25, 4.0, 0.0]])
    got = neuron_scores({"i.weight": up, "o.weight": down}, FeedForward("f", "i", "o", 3))
    assert got.tolist() == [3.0 + 1.25, 0.5 + 4.0, 6.0 + 1.0]


# ---------------------------------------------------------------------------------------------- selection
def _greedy_oracle(scores, alive, n_pruned, floor=1):
    """Prune the globally lowest alive unit (earlier first among ties) unless it is the last `floor` of its group."""
    keep = [list(map(bool, a)) for a in alive]
    units = [(float(s[i]), g, i) for g, s in enumerate(scores) for i in range(len(s)) if keep[g][i]]
    todo = n_pruned - sum(not k for ks in keep for k in ks)
    for _score, g, i in sorted(units, key=lambda u: (u[0], u[1], u[2])):
        if todo == 0:
            break
        if sum(keep[g]) > floor:
            keep[g][i] = False
            todo -= 1
    return keep


@pytest.mark.parametrize("seed", range(6))
def test_global_selection_with_floor_matches_greedy_oracle(seed):
    g = torch.Generator().manual_seed(seed)
    sizes = [3, 5, 2, 4]
    scores = [torch.randint(0, 4, (n,), generator=g).double() for n in sizes]  # many ties
    alive = [torch.rand(n, generator=g) > 0.2 for n in sizes]
    alive = [a if a.any() else torch.ones_like(a) for a in alive]
    dead = sum(int((~a).sum()) for a in alive)
    most = sum(sizes) - len(sizes)
    for n in range(dead, most + 1):
        got = select_units(scores, alive, n)
        assert [k.tolist() for k in got] == _greedy_oracle(scores, alive, n), n
        assert all(k.any() for k in got)
        assert sum(int((~k).sum()) for k in got) == n


def test_floor_keeps_one_head_per_block_even_when_it_is_globally_weak():
    scores = [torch.tensor([0.1, 0.2, 0.3]), torch.tensor([5.0, 6.0, 7.0])]
    keep = select_units(scores, [torch.ones(3, dtype=torch.bool)] * 2, 4)
    assert keep[0].tolist() == [False, False, True]  # the weak block keeps its best head
    assert keep[1].tolist() == [False, False, True]  # ... so the strong block gives up two
    with pytest.raises(ValueError, match=r"at most 4"):
        select_units(scores, [torch.ones(3, dtype=torch.bool)] * 2, 5)


def _uniter_scope():
    torch.manual_seed(0)
    model = Uniter("tiny", img_dim=12)
    params = dict(resolve_scope(model, "encoder"))
    return model, params, model.structure().restricted(params)


def test_structured_masks_prune_whole_heads_and_neurons_monotonically():
    model, params, structure = _uniter_scope()
    assert structure.num_heads == 8 and structure.num_neurons == 128
    m1 = structured_masks(params, structure, None, 0.25, "heads+neurons")
    m2 = structured_masks(params, structure, m1, 0.5, "heads+neurons")
    assert set(m2) == set(params) and m2["pooler.dense.weight"].all()  # outside the structure: untouched
    for masks, frac in ((m1, 0.25), (m2, 0.5)):
        heads = [unit_alive(masks, b) for b in structure.attention]
        neurons = [unit_alive(masks, f) for f in structure.ffn]
        assert sum(int((~h).sum()) for h in heads) == round(frac * 8)
        assert sum(int((~n).sum()) for n in neurons) == round(frac * 128)
        for b, alive in zip(structure.attention, heads):  # every weight of a head is pruned or none is
            rows = alive.repeat_interleave(b.head_size)
            for lin in (b.query, b.key, b.value):
                m = masks[f"{lin}.weight"]
                assert m[rows].all() and not m[~rows].any()
            o = masks[f"{b.output}.weight"]
            assert o[:, rows].all() and not o[:, ~rows].any()
        for f, alive in zip(structure.ffn, neurons):
            assert masks[f"{f.input}.weight"][alive].all() and not masks[f"{f.input}.weight"][~alive].any()
            assert masks[f"{f.output}.weight"][:, alive].all() and not masks[f"{f.output}.weight"][:, ~alive].any()
    for name in m1:  # pruned stays pruned
        assert not (m2[name] & ~m1[name]).any()
    # heads only: the FFN weights stay dense; the pruned heads are the lowest-L1 ones (global ranking)
    mh = structured_masks(params, structure, None, 0.25, "heads")
    assert all(mh[f"{f.input}.weight"].all() for f in structure.ffn)
    scores = torch.cat([head_scores(params, b) for b in structure.attention])
    pruned = torch.cat([~unit_alive(mh, b) for b in structure.attention])
    assert set(torch.nonzero(pruned).squeeze(1).tolist()) == set(scores.argsort()[:2].tolist())


def test_impossible_structured_requests_name_the_value_and_fix():
    _, params, structure = _uniter_scope()
    with pytest.raises(ValueError, match=r"removes 7 of 8 heads.*at most 6.*target_sparsity <= 0\.75"):
        structured_masks(params, structure, None, 0.875, "heads")
    with pytest.raises(ValueError, match=r"outside \[0, 1\).*every head"):
        structured_masks(params, structure, None, 1.0, "heads")


def test_structure_of_all_backbones():
    lx = Lxmert("tiny", img_dim=8).structure()
    assert len(lx.attention) == 2 + 1 + 3 and len(lx.ffn) == 2 + 1 + 2
    assert {b.attrs for b in lx.attention} == {(("num_attention_heads", "heads"), ("head_size", "all"))}
    vilt = Vilt("tiny").structure()
    assert vilt.attention[0].query == "vilt.encoder.layer.0.attention.attention.query"
    for s, model in ((lx, Lxmert("tiny", img_dim=8)), (vilt, Vilt("tiny"))):
        names = {n for n, _ in model.named_modules()}
        assert all(set(b.linears) <= names and b.core in names for b in s.attention)
        assert all(set(f.linears) <= names for f in s.ffn)
        scope = {n for n, _ in resolve_scope(model, "encoder")}
        assert s.restricted(scope) == s  # every unit lies in the "encoder" scope
    with pytest.raises(ValueError, match="structure"):
        find_structure(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------------------------------------- N:M
def _nm_oracle(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    out = torch.zeros_like(w, dtype=torch.bool)
    for r in range(w.shape[0]):
        for start in range(0, w.shape[1], m):
            group = [(-abs(float(w[r, start + j])), j) for j in range(m)]
            for _, j in sorted(group)[:n]:
                out[r, start + j] = True
    return out


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (3, 8), (1, 2)])
def test_nm_masks_keep_exactly_the_n_largest_of_every_group(n, m):
    g = torch.Generator().manual_seed(n * 10 + m)
    w = torch.randint(-3, 4, (6, 16), generator=g).float()  # many ties, incl. +x / -x
    mask = nm_mask(w, n, m)
    assert torch.equal(mask, _nm_oracle(w, n, m))
    assert (mask.reshape(6, -1, m).sum(-1) == n).all()
    assert nm_violations({"w": mask}, n, m).violations == {}
    assert nm_violations({"w": torch.ones(6, 16, dtype=torch.bool)}, n, m).violations == {"w": 6 * 16 // m}


def test_nm_rounds_reach_the_pattern_exactly_and_monotonically():
    g = torch.Generator().manual_seed(0)
    params = {"a": torch.randn(8, 16, generator=g), "b": torch.randn(4, 32, generator=g)}
    sched = nm_schedule(2, 4, [0.2, 0.4], 0.2)
    assert sched == [0.0, 0.2, 0.4, 0.5]
    masks = None
    for r, s in enumerate(sched[1:], 1):
        new = nm_round_masks(params, masks, s, 2, 4, final=r == len(sched) - 1)
        total = sum(p.numel() for p in params.values())
        assert sum(int((~m).sum()) for m in new.values()) == round(s * total)
        for name, m in new.items():
            assert (m.reshape(m.shape[0], -1, 4).sum(-1) >= 2).all()  # room for the final round
            if masks is not None:
                assert not (m & ~masks[name]).any()
        masks = new
        for p in params.values():  # training in between: the weights move
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    assert nm_violations(masks, 2, 4).violations == {}
    assert all((m.reshape(m.shape[0], -1, 4).sum(-1) == 2).all() for m in masks.values())


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: parse_nm("4:4"), r"'4:4' needs 1 <= N < M"),
        (lambda: parse_nm("3:2"), r"'3:2' needs 1 <= N < M"),
        (lambda: parse_nm("0:4"), r"1 <= N < M"),
        (lambda: parse_nm("2-4"), r"malformed.*'2:4'"),
        (lambda: nm_mask(torch.ones(3, 6), 2, 4), r"input dimension 6.*not divisible by M=4.*exclude"),
        (lambda: parse_granularity("rows"), r"granularity='rows' is unknown"),
        (lambda: nm_schedule(2, 4, [0.3, 0.6], 0.2), r"goes past 0\.5"),
    ],
)
def test_nm_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------------------------- callback
class _Random(torch.utils.data.Dataset):
    def __init__(self, n: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        self.items = [
            {
                "input_ids": torch.randint(5, 900, (5,), generator=g),
                "img_feat": torch.randn(3, 12, generator=g),
                "img_pos_feat": torch.rand(3, 7, generator=g),
                "labels": torch.tensor(i % 2),
            }
            for i in range(n)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.items[i]


class _Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = Uniter("tiny", img_dim=12)
        self.head = torch.nn.Linear(32, 2)

    def training_step(self, batch, batch_idx):
        return torch.nn.functional.cross_entropy(self.head(self.backbone(batch).pooled), batch["labels"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path, **kw):
    cb = LotteryTicketCallback(epochs_per_round=1, monitor=None, ticket_dir=str(tmp_path / "tickets"), plot=False, **kw)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=cb.num_rounds,
        callbacks=[cb],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    module = _Classifier()
    trainer.fit(module, DataLoader(_Random(), batch_size=8))
    return cb, module


def test_callback_heads_granularity_prunes_whole_heads_with_floor(tmp_path):
    cb, module = _fit(tmp_path, target_sparsity=0.75, schedule=[0.5, 0.75], granularity="heads")
    assert cb.sparsities == [0.0, 0.5, 0.75] and len(cb.results) == 3
    structure = find_structure(module)
    alive = [unit_alive(cb.masks, b) for b in structure.attention]
    assert [int(a.sum()) for a in alive] == [1, 1]  # 6 of 8 heads removed, one kept per layer
    params = dict(module.named_parameters())
    for name, mask in cb.masks.items():
        assert torch.count_nonzero(params[name].detach()[~mask]) == 0, name
    ticket = Ticket.load(tmp_path / "tickets" / "round-02.safetensors")
    assert ticket.metadata["granularity"] == "heads"
    round1 = Ticket.load(tmp_path / "tickets" / "round-01.safetensors").masks
    for name, mask in ticket.masks.items():
        assert not (mask & ~round1[name]).any()
    # resume state: the masks round-trip, and another granularity is refused
    state = cb.state_dict()
    kw = dict(schedule=[0.5, 0.75], epochs_per_round=1, monitor=None)
    other = LotteryTicketCallback(0.75, granularity="heads+neurons", **kw)
    with pytest.raises(ValueError, match="configured as"):
        other.load_state_dict(state)
    same = LotteryTicketCallback(0.75, granularity="heads", **kw)
    same.load_state_dict(state)


def test_callback_nm_granularity_reaches_the_pattern(tmp_path):
    cb, module = _fit(tmp_path, target_sparsity=None, schedule=[0.25], granularity="2:4")
    assert cb.sparsities == [0.0, 0.25, 0.5]
    assert nm_violations(cb.masks, 2, 4).violations == {}
    assert all((m.reshape(m.shape[0], -1, 4).sum(-1) == 2).all() for m in cb.masks.values())
    assert [r["sparsity"] for r in cb.results] == pytest.approx([0.0, 0.25, 0.5])


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(target_sparsity=0.9, rate=0.9, granularity="heads"), r"at most 6 .*target_sparsity <= 0\.75"),
        (dict(target_sparsity=None, schedule=[0.3], granularity="2:5"), r"not divisible by M=5"),
    ],
)
def test_callback_refuses_impossible_requests_before_training(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _fit(tmp_path, **kw)


def test_callback_granularity_argument_is_validated():
    with pytest.raises(ValueError, match=r"needs 1 <= N < M"):
        LotteryTicketCallback(epochs_per_round=1, granularity="4:4")
    assert LotteryTicketCallback(0.3, epochs_per_round=1, granularity="1:4").sparsities[-1] == 0.75


def test_select_units_exhaustive_tiny():
    """All alive patterns of two blocks of two units, every feasible count: the oracle agrees."""
    scores = [torch.tensor([1.0, 1.0]), torch.tensor([0.5, 2.0])]
    for bits in itertools.product([True, False], repeat=4):
        alive = [torch.tensor(bits[:2]), torch.tensor(bits[2:])]
        if not all(a.any() for a in alive):
            continue
        dead = 4 - sum(bits)
        for n in range(dead, 3):
            got = [k.tolist() for k in select_units(scores, alive, n)]
            assert got == _greedy_oracle(scores, alive, n)


def test_structure_prefixing_and_restriction():
    s = Structure((BLOCK,), (FeedForward("f", "i", "o", 3),))
    p = s.prefixed("m.")
    assert p.attention[0].output == "m.o" and p.ffn[0].input == "m.i"
    assert p.restricted({"m.q.weight", "m.k.weight", "m.v.weight", "m.o.weight"}).ffn == ()
