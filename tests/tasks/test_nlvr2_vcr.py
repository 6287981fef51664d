"""NLVR2 (pair head, left/right row order) and VCR (Q->A, QA->R, Q->AR) tasks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lightning_tickets.backbones import BackboneOutput, Uniter, VLBackbone
from lightning_tickets.metrics.vcr import VCRAccuracy
from lightning_tickets.tasks.nlvr2 import NLVR2, pair_rows
from lightning_tickets.tasks.vcr import VCR

IMG_DIM = 8


def rows(n: int, g: torch.Generator) -> dict:
    return {
        "input_ids": torch.randint(1, 999, (n, 5), generator=g),
        "attention_mask": torch.ones(n, 5, dtype=torch.long),
        "img_feat": torch.randn(n, 3, IMG_DIM, generator=g),
        "img_pos_feat": torch.rand(n, 3, 7, generator=g),
        "img_attention_mask": torch.ones(n, 3, dtype=torch.long),
    }


def nlvr2_batch(b: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {**rows(2 * b, g), "labels": torch.randint(0, 2, (b,), generator=g)}


def vcr_batch(b: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "qa": rows(4 * b, g),
        "qar": rows(4 * b, g),
        "answer_label": torch.randint(0, 4, (b,), generator=g),
        "rationale_label": torch.randint(0, 4, (b,), generator=g),
        "num_choices": 4,
    }


# ---------------------------------------------------------------------------------------------------- NLVR2


def test_pair_rows_order():
    pooled = torch.arange(8.0).view(4, 2)  # rows 0,1 left; rows 2,3 right
    assert pair_rows(pooled, 2).tolist() == [[0.0, 1.0, 4.0, 5.0], [2.0, 3.0, 6.0, 7.0]]
    with pytest.raises(ValueError, match="2B rows"):
        pair_rows(pooled, 3)


def test_nlvr2_head_sees_left_then_right_and_swapping_swaps_halves():
    torch.manual_seed(0)
    model = NLVR2(Uniter("tiny", img_dim=IMG_DIM)).eval()
    seen = []
    model.head.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    batch = nlvr2_batch(3)
    with torch.no_grad():
        model(batch)
        pooled = model.backbone(batch).pooled
        swapped = {k: torch.cat([v[3:], v[:3]]) if k != "labels" else v for k, v in batch.items()}
        model(swapped)
    h = model.backbone.hidden_size
    assert seen[0].shape == (3, 2 * h)
    torch.testing.assert_close(seen[0][:, :h], pooled[:3])  # left image rows first
    torch.testing.assert_close(seen[0][:, h:], pooled[3:])
    torch.testing.assert_close(seen[1], torch.cat([seen[0][:, h:], seen[0][:, :h]], dim=1), atol=1e-5, rtol=1e-5)


def test_nlvr2_training_step_and_vilt_image_types():
    torch.manual_seed(0)
    model = NLVR2(Uniter("tiny", img_dim=IMG_DIM))
    loss = model.training_step(nlvr2_batch(2), 0)
    assert torch.isfinite(loss)
    loss.backward()
    assert model.head[0].weight.shape == (64, 64) and model.head[-1].out_features == 2
    assert model.backbone.pooler.dense.weight.grad is not None

    class Recorder(VLBackbone):
        def __init__(self):
            super().__init__()
            self.hidden_size = 4
            self.batches = []

        def forward(self, batch):
            self.batches.append(batch)
            x = torch.zeros(batch["input_ids"].shape[0], 1, 4)
            m = torch.ones(x.shape[:2], dtype=torch.bool)
            return BackboneOutput(x, x[:, 0], m, m, m)

    rec = Recorder()
    NLVR2(rec, image_token_types=[1, 2])(nlvr2_batch(2))
    assert rec.batches[-1]["image_token_type_idx"].tolist() == [1, 1, 2, 2]
    NLVR2(rec)(nlvr2_batch(2))
    assert "image_token_type_idx" not in rec.batches[-1]


def test_nlvr2_ticket_fit(quick_trainer, two_round_ticket):
    torch.manual_seed(0)
    model = NLVR2(Uniter("tiny", img_dim=IMG_DIM), lr=1e-3)
    train = DataLoader([nlvr2_batch(2, s) for s in range(2)], batch_size=None)
    cb = two_round_ticket("val/acc")
    quick_trainer([cb]).fit(model, train, DataLoader([nlvr2_batch(2, 7)], batch_size=None))
    assert [round(r["sparsity"], 3) for r in cb.results] == [0.0, 0.5]


# ---------------------------------------------------------------------------------------------------- VCR


def test_vcr_accuracy_hand_computed():
    metric = VCRAccuracy()
    qa = torch.tensor([[0.1, 0.9, 0.0, 0.0], [0.8, 0.1, 0.0, 0.0], [0.0, 0.0, 0.0, 0.7]])  # picks 1, 0, 3
    qar = torch.tensor([[0.0, 0.0, 0.5, 0.1], [0.0, 0.6, 0.0, 0.0], [0.9, 0.0, 0.0, 0.0]])  # picks 2, 1, 0
    # record 0: answer right, rationale right; record 1: answer wrong (gold 2), rationale right;
    # record 2: answer right, rationale wrong (gold 3)
    metric.update(qa, qar, torch.tensor([1, 2, 3]), torch.tensor([2, 1, 3]))
    values = metric.compute()
    assert float(values["q2a"]) == pytest.approx(2 / 3)
    assert float(values["qa2r"]) == pytest.approx(2 / 3)
    assert float(values["q2ar"]) == pytest.approx(1 / 3)
    assert all(metric._reductions[k].__name__ == "dim_zero_sum" for k in ("q2a", "qa2r", "q2ar", "total"))


def test_vcr_scores_loss_and_backward():
    torch.manual_seed(0)
    model = VCR(Uniter("tiny", img_dim=IMG_DIM)).eval()  # no dropout: forward passes comparable
    batch = vcr_batch(2)
    qa, qar = model(batch)
    assert qa.shape == qar.shape == (2, 4)
    with torch.no_grad():  # row 4i + j is record i's candidate j
        flat = model.head(model.backbone(batch["qa"]).pooled).squeeze(-1)
    torch.testing.assert_close(qa.detach(), flat.view(2, 4))
    expected = F.cross_entropy(qa, batch["answer_label"]) + F.cross_entropy(qar, batch["rationale_label"])
    loss = model.training_step(batch, 0)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert model.head[-1].weight.grad is not None and model.head[-1].out_features == 1


def test_vcr_ticket_fit_logs_q2ar(quick_trainer, two_round_ticket):
    torch.manual_seed(0)
    model = VCR(Uniter("tiny", img_dim=IMG_DIM), lr=1e-3)
    train = DataLoader([vcr_batch(1, s) for s in range(2)], batch_size=None)
    cb = two_round_ticket("val/q2ar")
    quick_trainer([cb]).fit(model, train, DataLoader([vcr_batch(2, 7)], batch_size=None))
    assert [round(r["sparsity"], 3) for r in cb.results] == [0.0, 0.5]
    assert all(r["score"] in (0.0, 0.5, 1.0) for r in cb.results)
