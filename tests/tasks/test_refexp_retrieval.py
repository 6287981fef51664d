"""Referring expressions (region scores, IoU accuracy) and image-text retrieval (ITM BCE, Recall@K evaluation)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lightning_tickets.backbones import Uniter
from lightning_tickets.metrics.grounding import GroundingAccuracy, paired_box_iou
from lightning_tickets.metrics.recall import RetrievalRecall
from lightning_tickets.tasks.refexp import MASKED_SCORE, ReferringExpression, region_hidden_states
from lightning_tickets.tasks.retrieval import ImageTextRetrieval

IMG_DIM = 8


def region_rows(b: int, g: torch.Generator, r: int = 3) -> dict:
    boxes = torch.rand(b, r, 2, generator=g) * 0.5
    x2y2 = boxes + 0.2 + torch.rand(b, r, 2, generator=g) * 0.3
    wh = x2y2 - boxes
    pos = torch.cat([boxes, x2y2, wh, wh.prod(-1, keepdim=True)], dim=-1)
    return {
        "input_ids": torch.randint(1, 999, (b, 4), generator=g),
        "attention_mask": torch.ones(b, 4, dtype=torch.long),
        "img_feat": torch.randn(b, r, IMG_DIM, generator=g),
        "img_pos_feat": pos,
        "img_attention_mask": torch.tensor([[1] * r] + [[1] * (r - 1) + [0]] * (b - 1)),
    }


def refexp_batch(b: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = region_rows(b, g)
    labels = torch.randint(0, 2, (b,), generator=g)
    batch["labels"] = labels
    batch["target_box"] = batch["img_pos_feat"][torch.arange(b), labels, :4].clone()
    return batch


# ---------------------------------------------------------------------------------------------------- RefExp


def test_box_iou_and_grounding_accuracy_on_known_boxes():
    pred = torch.tensor([[0.0, 0.0, 0.4, 0.4], [0.0, 0.0, 0.4, 0.4], [0.5, 0.5, 1.0, 1.0]])
    target = torch.tensor([[0.0, 0.0, 0.4, 0.2], [0.2, 0.0, 0.6, 0.4], [0.0, 0.0, 0.5, 0.5]])
    # 0.08/0.16 = 0.5 (>= 0.5: right); overlap 0.2x0.4 = 0.08 / (0.16 + 0.16 - 0.08) = 1/3; touching corner: 0
    torch.testing.assert_close(paired_box_iou(pred, target), torch.tensor([0.5, 1 / 3, 0.0]))
    metric = GroundingAccuracy()
    metric.update(pred, target)
    assert float(metric.compute()) == pytest.approx(1 / 3)
    assert metric._reductions["correct"].__name__ == "dim_zero_sum"


def test_region_states_scores_and_masking():
    torch.manual_seed(0)
    model = ReferringExpression(Uniter("tiny", img_dim=IMG_DIM)).eval()
    batch = refexp_batch(3)
    with torch.no_grad():
        out = model.backbone(batch)
        regions = batch["img_attention_mask"].bool()
        hidden = region_hidden_states(out, regions)
        torch.testing.assert_close(hidden[0], out.sequence[0, 4:7])  # UNITER: [4 text | 3 regions]
        assert hidden[1, 2].abs().sum() == 0  # padded region
        scores = model(batch)
    assert scores.shape == (3, 3) and float(scores[1, 2]) == MASKED_SCORE
    torch.testing.assert_close(scores[0], model.head(out.sequence[0, 4:7]).squeeze(-1))
    # forced prediction: region 1's box of row 0 against its own box -> IoU 1; row 1 region 0 vs region 1's box
    fake = torch.tensor([[0.0, 5.0, 0.0], [5.0, 0.0, MASKED_SCORE]])
    boxes = model.predicted_boxes(fake, batch["img_pos_feat"][:2])
    torch.testing.assert_close(boxes, batch["img_pos_feat"][[0, 1], [1, 0], :4])


def test_refexp_training_step():
    torch.manual_seed(0)
    model = ReferringExpression(Uniter("tiny", img_dim=IMG_DIM))
    batch = refexp_batch(4)
    loss = model.training_step(batch, 0)
    assert torch.isfinite(loss)
    loss.backward()
    assert model.head[-1].weight.shape == (1, 32) and model.head[-1].weight.grad is not None


def test_refexp_ticket_fit(quick_trainer, two_round_ticket):
    torch.manual_seed(0)
    model = ReferringExpression(Uniter("tiny", img_dim=IMG_DIM), lr=1e-3)
    cb = two_round_ticket("val/acc")
    train = DataLoader([refexp_batch(4, s) for s in range(2)], batch_size=None)
    quick_trainer([cb]).fit(model, train, DataLoader([refexp_batch(4, 9)], batch_size=None))
    assert [round(r["sparsity"], 3) for r in cb.results] == [0.0, 0.5]


# ---------------------------------------------------------------------------------------------------- retrieval
TXT2IMG = [0, 0, 1, 2]  # 4 captions, 3 images
IMG2TXTS = [[0, 1], [2], [3]]


def itm_batch(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {**region_rows(4, g), "itm_labels": torch.tensor([1, 0, 1, 0])}


def eval_batches() -> list[dict]:
    """The 4 x 3 cross product, image-major, in blocks of 4 rows (one image per block)."""
    g = torch.Generator().manual_seed(5)
    images = region_rows(3, g)
    captions = torch.randint(1, 999, (4, 4), generator=g)
    out = []
    for i in range(3):
        block = {k: v[i : i + 1].expand(4, *v.shape[1:]).clone() for k, v in images.items() if k != "input_ids"}
        block["img_attention_mask"] = torch.ones(4, 3, dtype=torch.long)
        block.update(input_ids=captions, txt_index=torch.arange(4), img_index=torch.full((4,), i))
        out.append(block)
    return out


class FakeRetrievalData(L.LightningDataModule):
    def __init__(self):
        super().__init__()
        self.asked = []

    def retrieval_index(self, split):
        self.asked.append(split)
        return TXT2IMG, IMG2TXTS

    def train_dataloader(self):
        return DataLoader([itm_batch(s) for s in range(2)], batch_size=None)

    def val_dataloader(self):
        return DataLoader(eval_batches(), batch_size=None)

    def test_dataloader(self):
        return DataLoader(eval_batches(), batch_size=None)


def test_retrieval_bce_training_step():
    torch.manual_seed(0)
    model = ImageTextRetrieval(Uniter("tiny", img_dim=IMG_DIM)).eval()
    batch = itm_batch(0)
    scores = model(batch)
    assert scores.shape == (4,) and model.head[-1].weight.shape == (1, 32)
    loss = model.training_step(batch, 0)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(scores, batch["itm_labels"].float()))
    loss.backward()
    assert model.backbone.pooler.dense.weight.grad is not None


def test_retrieval_evaluation_fills_the_matrix_from_constructor_ground_truth(quick_trainer):
    torch.manual_seed(0)
    model = ImageTextRetrieval(Uniter("tiny", img_dim=IMG_DIM), txt2img=TXT2IMG, img2txts=IMG2TXTS, top_k=(1, 2, 3))
    seen = {}
    orig = model._end_eval

    def spy(stage):
        seen["scores"] = model._recall[stage].scores.clone()
        orig(stage)

    model._end_eval = spy
    t = quick_trainer(limit_val_batches=1.0)
    t.validate(model, DataLoader(eval_batches(), batch_size=None), verbose=False)
    assert torch.isfinite(seen["scores"]).all()  # every (caption, image) pair scored once
    with torch.no_grad():
        expected = torch.stack([model.eval()(b) for b in eval_batches()], dim=1)  # [txt, img]
    torch.testing.assert_close(seen["scores"], expected)
    m = t.callback_metrics
    assert {"val/ir_r1", "val/ir_r2", "val/ir_r3", "val/tr_r1", "val/tr_r2", "val/tr_r3", "val/rsum"} <= set(m)
    assert float(m["val/ir_r3"]) == 1.0  # 3 images: the right one is always in the top 3
    ref = RetrievalRecall(TXT2IMG, IMG2TXTS, top_k=(1, 2, 3))
    ref.update(
        expected.flatten(), *[x.flatten() for x in torch.meshgrid(torch.arange(4), torch.arange(3), indexing="ij")]
    )
    for name, value in ref.compute().items():
        assert float(m[f"val/{name}"]) == pytest.approx(float(value)), name
    assert model._recall == {}  # the matrix is freed after the epoch


def test_retrieval_ticket_fit_with_datamodule_ground_truth(quick_trainer, two_round_ticket):
    torch.manual_seed(0)
    model = ImageTextRetrieval(Uniter("tiny", img_dim=IMG_DIM), lr=1e-3)
    dm = FakeRetrievalData()
    cb = two_round_ticket("val/rsum")
    t = quick_trainer([cb], limit_val_batches=1.0)
    t.fit(model, datamodule=dm)
    assert [round(r["sparsity"], 3) for r in cb.results] == [0.0, 0.5]
    assert all(0.0 <= r["score"] <= 6.0 for r in cb.results)
    t.test(model, datamodule=dm, verbose=False)
    assert dm.asked == ["val", "val", "test"]
    assert "test/tr_r10" in t.callback_metrics


def test_retrieval_without_ground_truth_fails_clearly(quick_trainer):
    model = ImageTextRetrieval(Uniter("tiny", img_dim=IMG_DIM))
    with pytest.raises(RuntimeError, match="txt2img"):
        quick_trainer().validate(model, DataLoader(eval_batches(), batch_size=None), verbose=False)
