"""Ticket transfer with ``ticket_remap``: a ticket found (IMP) on a pre-training task module whose parameter names
carry an extra prefix, trained in fixed-ticket mode on a VQA task module; the match report and the zeros."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_tickets import LotteryTicketCallback, Ticket, TicketError
from lightning_tickets.backbones import Uniter
from lightning_tickets.data.collators import VLBatchCollator
from lightning_tickets.scope import scope_names
from lightning_tickets.tasks import VQA, Pretraining
from lightning_tickets.transfer import TicketMatch, map_name, match_ticket

IMG_DIM, N_ANSWERS = 6, 5
# the source ticket covers layer 0 of the encoder only: layer 1 and the pooler stay dense on the target
SOURCE_SCOPE = {"include": [r"encoder\.layer\.0\."], "modules": ["Linear"]}


class _Synthetic(Dataset):
    """Tiny VL examples with pre-training and VQA targets (deterministic)."""

    def __init__(self, n: int = 32, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(5, 1000, (n, 6), generator=g)
        self.feat = torch.randn(n, 3, IMG_DIM, generator=g)
        self.pos = torch.rand(n, 3, 7, generator=g)
        self.answer = torch.randint(0, N_ANSWERS, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        ids = torch.cat([torch.tensor([101]), self.ids[i], torch.tensor([102])])
        labels = torch.full_like(ids, -100)
        labels[2] = ids[2]
        masked = ids.clone()
        masked[2] = 103
        return {
            "input_ids": masked,
            "mlm_labels": labels,
            "img_feat": self.feat[i],
            "img_pos_feat": self.pos[i],
            "img_masked": torch.tensor([False, True, False]),
            "itm_labels": torch.tensor(i % 2),
            "answer_ids": self.answer[i : i + 1],
            "answer_scores": torch.ones(1),
        }


def _loader() -> DataLoader:
    return DataLoader(_Synthetic(), batch_size=8, collate_fn=VLBatchCollator(num_answers=N_ANSWERS))


class Wrapped(L.LightningModule):
    """A user's wrapper holding the pre-training task as ``self.model``: parameter names ``model.backbone.*``."""

    def __init__(self) -> None:
        super().__init__()
        self.model = Pretraining(Uniter("tiny", img_dim=IMG_DIM), tasks=["mlm", "itm", "mrfr"], mix="sum", lr=1e-3)

    def training_step(self, batch, batch_idx):
        return sum(self.model(batch).values())  # MLM + ITM + MRFR losses

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def _trainer(max_steps: int, cb: LotteryTicketCallback) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps,
        callbacks=[cb],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        accelerator="cpu",
    )


@pytest.fixture(scope="module")
def source_ticket(tmp_path_factory) -> str:
    """IMP (2 rounds, 50%) on the wrapped pre-training task; the ticket's names start with ``model.backbone.``."""
    d = tmp_path_factory.mktemp("source")
    torch.manual_seed(0)
    cb = LotteryTicketCallback(
        0.5, schedule=[0.5], steps_per_round=3, scope=SOURCE_SCOPE, monitor=None, ticket_dir=str(d), plot=False
    )
    _trainer(6, cb).fit(Wrapped(), _loader())
    return str(d / "round-01.safetensors")


def test_map_name_is_the_rule_of_ticket_apply():
    remap = {"model.": "x.", "model.backbone.": "backbone.", "": "root."}
    assert map_name("model.backbone.encoder.w", remap) == "backbone.encoder.w"  # longest key wins
    assert map_name("model.head.w", remap) == "x.head.w"
    assert map_name("other.w", remap) == "root.other.w"  # "" matches every name
    assert map_name("w", None, prefix="net.") == "net.w"
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    t = Ticket({"m.0.weight": torch.rand(3, 3) > 0.5, "m.1.weight": torch.rand(3, 3) > 0.5})
    r = match_ticket(t, net, remap={"m.": ""})
    assert set(t.apply(net, remap={"m.": ""})) == set(r.matched.values()) == {"0.weight", "1.weight"}


def test_source_ticket_names_carry_the_prefix(source_ticket):
    t = Ticket.load(source_ticket)
    assert t.sparsity == pytest.approx(0.5, abs=1e-3)
    assert all(n.startswith("model.backbone.encoder.layer.0.") for n in t.masks)
    assert len(t.masks) == 6  # query, key, value, attention output, intermediate, output


def test_transfer_with_remap_report_and_zeros(source_ticket, tmp_path):
    ticket = Ticket.load(source_ticket)
    torch.manual_seed(1)
    target = VQA(Uniter("tiny", img_dim=IMG_DIM), num_answers=N_ANSWERS, lr=1e-3)
    remap = {"model.backbone.": "backbone.", "text_model.": "backbone."}  # the second key is never used
    cb = LotteryTicketCallback(
        ticket=source_ticket, ticket_remap=remap, monitor=None, ticket_dir=str(tmp_path / "out"), plot=False
    )
    before = {n: p.detach().clone() for n, p in target.named_parameters()}
    _trainer(4, cb).fit(target, _loader())

    report = cb.ticket_report
    assert isinstance(report, TicketMatch) and report.complete
    expected = {n: "backbone." + n[len("model.backbone.") :] for n in ticket.masks}
    assert report.matched == expected and report.renamed == len(expected)
    assert report.missing == [] and report.shape_mismatch == []
    assert report.unused_remap == ["text_model."]
    in_scope = scope_names(target, "encoder")  # the target's default scope
    assert report.uncovered == [n for n in in_scope if n not in expected.values()]
    assert "backbone.encoder.layer.1.attention.self.query.weight" in report.uncovered
    assert "backbone.pooler.dense.weight" in report.uncovered
    text = report.format()
    assert report.by_rule == {"'model.backbone.' -> 'backbone.'": 6}
    assert text.splitlines()[:3] == [
        "ticket -> model: 6/6 ticket tensors matched, 0 missing, 0 wrong shape",
        "  matched 'model.backbone.' -> 'backbone.': 6 (e.g. 'model.backbone.encoder.layer.0.attention.self.query."
        "weight' -> 'backbone.encoder.layer.0.attention.self.query.weight')",
        "  remap keys matching no ticket tensor: 'text_model.'",
    ]
    assert text.splitlines()[3].startswith("  scope tensors not covered by the ticket (trained dense): 7: ")

    # the trained model keeps exactly the ticket's zeros; uncovered tensors trained dense
    params = dict(target.named_parameters())
    for tname, pname in expected.items():
        assert torch.equal(params[pname].detach() != 0, ticket.masks[tname]), pname
    for n in report.uncovered:
        assert bool((params[n] != 0).all()) and not torch.equal(params[n], before[n])
    assert set(cb.masks) == set(expected.values())

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    row = summary["rounds"][0]
    assert row["match"]["matched"] == expected and row["match"]["unused_remap"] == ["text_model."]
    assert row["sparsity"] == pytest.approx(ticket.sparsity)


def test_transfer_without_remap_fails_with_a_hint(source_ticket, tmp_path):
    target = VQA(Uniter("tiny", img_dim=IMG_DIM), num_answers=N_ANSWERS)
    cb = LotteryTicketCallback(ticket=source_ticket, monitor=None, ticket_dir=str(tmp_path / "o"), plot=False)
    with pytest.raises(TicketError, match=r"no matching parameter in VQA.*remap=\{'model\.': ''\}"):
        _trainer(1, cb).fit(target, _loader())


def test_match_report_lists_missing_and_wrong_shapes(source_ticket):
    ticket = Ticket.load(source_ticket)
    wide = VQA(Uniter("tiny", img_dim=IMG_DIM, intermediate_size=48), num_answers=N_ANSWERS)
    r = match_ticket(ticket, wide, remap={"model.backbone.": "backbone."}, scope="encoder")
    assert not r.complete and len(r.matched) == 4  # the attention tensors fit
    assert r.shape_mismatch == [
        "'model.backbone.encoder.layer.0.intermediate.dense.weight' -> "
        "'backbone.encoder.layer.0.intermediate.dense.weight': ticket [64, 32], parameter [48, 32]",
        "'model.backbone.encoder.layer.0.output.dense.weight' -> "
        "'backbone.encoder.layer.0.output.dense.weight': ticket [32, 64], parameter [32, 48]",
    ]
    wrong = match_ticket(ticket, wide, remap={"model.backbone.": "bert."}, scope="encoder")
    assert wrong.matched == {} and wrong.missing == list(ticket.masks)
    assert wrong.uncovered == scope_names(wide, "encoder")  # nothing of the target is pruned
    text = wrong.format()
    assert "0/6 ticket tensors matched, 6 missing" in text and "missing in the model (not applied)" in text
