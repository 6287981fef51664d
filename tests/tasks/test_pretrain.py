"""Pre-training: masking transforms, MLM/ITM/MRFR/MRC losses, task mixing, ViLT refusal, a 2-round ticket fit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lightning_tickets.backbones import Uniter, VLBackbone
from lightning_tickets.data.collators import VLBatchCollator
from lightning_tickets.data.pretrain_masking import (
    PretrainMasking,
    mask_regions,
    mask_tokens,
    sample_itm_pairs,
    sample_negative_indices,
)
from lightning_tickets.tasks.pretrain import Pretraining

IMG_DIM, CLASSES = 8, 5


def pretrain_batch(b: int = 4, seed: int = 0, soft: bool = True) -> dict:
    g = torch.Generator().manual_seed(seed)
    masking = PretrainMasking(vocab_size=1000, mlm_prob=0.3, mrm_prob=0.3, seed=seed)
    examples = []
    for k in range(b):
        r = 3 if k == 0 else 2
        ex = {
            "input_ids": torch.cat(
                [torch.tensor([101]), torch.randint(200, 999, (4,), generator=g), torch.tensor([102])]
            ),
            "img_feat": torch.randn(r, IMG_DIM, generator=g),
            "img_pos_feat": torch.rand(r, 7, generator=g),
            "itm_labels": torch.tensor(int(k % 2 == 0)),
        }
        if soft:
            ex["img_soft_label"] = torch.softmax(torch.randn(r, CLASSES, generator=g), dim=-1)
        examples.append(masking(ex))
    return VLBatchCollator()(examples)


# ---------------------------------------------------------------------------------------------------- masking


def test_mask_tokens_rates_specials_and_labels():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(200, 999, (400, 50), generator=g)
    ids[:, 0], ids[:, -1], ids[:, -5:-1] = 101, 102, 0  # [CLS] ... [PAD] x4 [SEP]
    masked, labels = mask_tokens(ids, vocab_size=1000, mask_token_id=103, generator=g)
    chosen = labels != -100
    assert not chosen[:, 0].any() and not chosen[:, -5:].any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert 0.13 < chosen.float().sum() / (400 * 44) < 0.17
    to_mask = (masked == 103) & chosen
    kept = (masked == ids) & chosen
    assert 0.76 < to_mask.sum() / chosen.sum() < 0.84
    assert 0.07 < kept.sum() / chosen.sum() < 0.13  # "keep" (10%) plus random draws hitting the same id
    assert torch.equal(masked[~chosen], ids[~chosen])
    # at least one token per text, even at probability 0
    _, few = mask_tokens(torch.tensor([[101, 7, 8, 102]]), 1000, mask_prob=0.0, generator=g)
    assert int((few != -100).sum()) == 1


def test_mask_regions_and_negative_sampling():
    g = torch.Generator().manual_seed(0)
    real = torch.tensor([[True, True, False], [True, False, False]])
    masked = mask_regions(real, mask_prob=0.0, generator=g)
    assert masked.sum(dim=1).tolist() == [1, 1] and not (masked & ~real).any()
    assert mask_regions(5, mask_prob=1.0).all()
    negatives = sample_negative_indices([1, 2], num_items=6, k=4, generator=g)
    assert sorted(negatives) == [0, 3, 4, 5]
    with pytest.raises(ValueError):
        sample_negative_indices(0, num_items=2, k=2)
    images, labels = sample_itm_pairs([0, 1, 2, 3] * 50, num_images=4, neg_prob=0.5, generator=g)
    pos = [i == t for i, t in zip(images, [0, 1, 2, 3] * 50)]
    assert [int(p) for p in pos] == labels and 60 < sum(labels) < 140


def test_masking_transform_and_collation_padding():
    batch = pretrain_batch()
    assert batch["mlm_labels"].shape == batch["input_ids"].shape
    assert batch["img_masked"].shape == (4, 3) and batch["img_masked"].dtype == torch.bool
    assert not batch["img_masked"][1:, 2].any()  # padded region never masked
    assert batch["img_soft_label"].shape == (4, 3, CLASSES)
    restored = torch.where(batch["mlm_labels"] != -100, batch["mlm_labels"], batch["input_ids"])
    assert (restored[:, 1:5] >= 200).all()


# ---------------------------------------------------------------------------------------------------- task


def model_for(**kw) -> Pretraining:
    torch.manual_seed(0)
    kw.setdefault("mrc_num_classes", CLASSES)
    return Pretraining(Uniter("tiny", img_dim=IMG_DIM), **kw)


def test_sum_mode_losses_finite_and_backward():
    model = model_for(mix="sum", task_weights=[1.0, 1.0, 0.5, 2.0])
    batch = pretrain_batch()
    losses = model(batch)
    assert sorted(losses) == ["itm", "mlm", "mrc", "mrfr"]
    assert all(torch.isfinite(v) for v in losses.values())
    loss = model.training_step(batch, 0)
    loss.backward()
    emb = model.backbone.embeddings.word_embeddings.weight
    assert emb.grad is not None and emb.grad.abs().sum() > 0  # tied MLM projection trains the embeddings
    assert all(p.grad is not None for p in model.head.parameters())


def test_mlm_head_tied_or_not_and_param_groups():
    tied = model_for(tasks=["mlm", "itm"])
    assert tied.head["mlm"].decoder is None and tied.head["mlm"].bias.shape == (1000,)
    untied = model_for(tasks=["mlm"], tie_mlm_weights=False)
    assert untied.head["mlm"].decoder.weight.shape == (1000, 32)
    model = model_for(tasks=["mlm", "itm"], lr=1e-4, head_lr_multiplier=5.0, new_backbone_params="none")
    groups = {g["name"]: g for g in model.parameter_groups()}
    assert groups["new"]["lr"] == pytest.approx(5e-4) and groups["pretrained"]["lr"] == pytest.approx(1e-4)
    new_ids = {id(p) for n in ("new", "new_no_decay") for p in groups[n]["params"]}
    assert new_ids == {id(p) for p in model.head.parameters()}
    assert model.head["itm"].weight.shape == (2, 32)


def test_losses_match_hand_computation():
    model = model_for(mix="sum").eval()
    batch = pretrain_batch()
    results = model.task_results(batch, ["mlm", "itm", "mrfr", "mrc"], joint=True)
    out = model.backbone(model.view(batch, text_masked=True, regions_masked=True))
    matched = batch["itm_labels"].bool()
    sel = (batch["mlm_labels"] != -100) & matched[:, None]
    logits = model.head["mlm"](
        out.sequence[:, : batch["input_ids"].shape[1]][sel], model.backbone.embeddings.word_embeddings.weight
    )
    torch.testing.assert_close(results["mlm"].loss, F.cross_entropy(logits, batch["mlm_labels"][sel]))
    torch.testing.assert_close(results["itm"].loss, F.cross_entropy(model.head["itm"](out.pooled), batch["itm_labels"]))
    t = batch["input_ids"].shape[1]
    rsel = batch["img_masked"] & matched[:, None]
    hidden = out.sequence[:, t : t + 3][rsel]  # UNITER: regions follow the text, in order
    pred = model.head["mrfr"](hidden)
    torch.testing.assert_close(results["mrfr"].loss, F.mse_loss(pred, batch["img_feat"][rsel]))
    soft = batch["img_soft_label"][rsel]
    log_q = F.log_softmax(model.head["mrc"](hidden), dim=-1)
    torch.testing.assert_close(results["mrc"].loss, (soft * (soft.log() - log_q)).sum(-1).mean())


def test_views_conditional_masking():
    batch = pretrain_batch()
    mlm_view = Pretraining.view(batch, text_masked=True, regions_masked=False)
    assert "img_masked" not in mlm_view and torch.equal(mlm_view["img_feat"], batch["img_feat"])
    mrm_view = Pretraining.view(batch, text_masked=False, regions_masked=True)
    assert not (mrm_view["input_ids"] == 103).any()
    assert mrm_view["img_feat"][batch["img_masked"]].abs().sum() == 0
    assert torch.equal(mrm_view["img_feat"][~batch["img_masked"]], batch["img_feat"][~batch["img_masked"]])


def test_sample_mode_draws_by_weight_and_skips_unsupported():
    model = model_for(task_weights=[1.0, 1.0, 1.0, 1.0])
    batch = pretrain_batch(soft=False)
    assert model.available_tasks(batch) == ["mlm", "itm", "mrfr"]  # no img_soft_label: no MRC
    draws = [model.sample_task(["mlm", "itm", "mrfr"], i) for i in range(300)]
    assert draws == [model.sample_task(["mlm", "itm", "mrfr"], i) for i in range(300)]  # same on every rank
    assert all(60 < draws.count(t) < 140 for t in ("mlm", "itm", "mrfr"))
    only_itm = model_for(task_weights=[0.0, 1.0, 0.0, 0.0])
    assert only_itm.available_tasks(batch) == ["itm"]
    loss = model.training_step(batch, 3)
    assert torch.isfinite(loss)
    loss.backward()
    with pytest.raises(ValueError, match="none of the objectives"):
        model.training_step({"input_ids": batch["input_ids"]}, 0)


def test_region_objectives_need_a_region_backbone():
    class PatchBackbone(VLBackbone):  # like ViLT: no img_dim
        def __init__(self):
            super().__init__()
            self.hidden_size = 8
            self.embeddings = torch.nn.Module()
            self.embeddings.word_embeddings = torch.nn.Embedding(50, 8)

        def forward(self, batch):  # pragma: no cover - not called
            raise AssertionError

    with pytest.raises(ValueError, match=r"\['mrfr', 'mrc'\].*use tasks=\['mlm', 'itm'\]"):
        Pretraining(PatchBackbone())
    ok = Pretraining(PatchBackbone(), tasks=["mlm", "itm"])
    assert ok.head["mlm"].bias.shape == (50,)
    with pytest.raises(ValueError, match="WRA"):
        Pretraining(PatchBackbone(), tasks=["mlm", "wra"])
    with pytest.raises(ValueError, match="mrc_num_classes"):
        model_for(mix="sum", mrc_num_classes=7)(pretrain_batch())


def test_pretraining_ticket_fit(quick_trainer, two_round_ticket):
    model = model_for(mix="sum", lr=1e-3)
    cb = two_round_ticket("val/loss", mode="min")
    trainer = quick_trainer([cb])
    train = DataLoader([pretrain_batch(seed=s) for s in range(2)], batch_size=None)
    trainer.fit(model, train, DataLoader([pretrain_batch(seed=9)], batch_size=None))
    assert [round(r["sparsity"], 3) for r in cb.results] == [0.0, 0.5]
    m = trainer.callback_metrics
    for name in (
        "val/loss",
        "val/mlm_loss",
        "val/itm_loss",
        "val/mrfr_loss",
        "val/mrc_loss",
        "val/mlm_acc",
        "val/itm_acc",
    ):
        assert torch.isfinite(m[name]), name
    expected = m["val/mlm_loss"] + m["val/itm_loss"] + m["val/mrfr_loss"] + m["val/mrc_loss"]
    torch.testing.assert_close(m["val/loss"], expected)
