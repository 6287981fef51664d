"""GQA and SNLI-VE tasks: head, loss, accuracy metric, parameter groups, a 2-round ticket fit on random tensors."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from lightning_tickets.backbones import Uniter
from lightning_tickets.metrics.accuracy import ArgmaxAccuracy
from lightning_tickets.tasks.base import cross_entropy_ignore
from lightning_tickets.tasks.gqa import GQA
from lightning_tickets.tasks.ve import VisualEntailment

IMG_DIM = 8


def region_batch(b: int, num_classes: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(b, 3, IMG_DIM, generator=g)
    return {
        "input_ids": torch.randint(1, 999, (b, 5), generator=g),
        "attention_mask": torch.ones(b, 5, dtype=torch.long),
        "img_feat": feat,
        "img_pos_feat": torch.rand(b, 3, 7, generator=g),
        "img_attention_mask": torch.tensor([[1, 1, 1]] + [[1, 1, 0]] * (b - 1)),
        "labels": (feat[:, 0, 0] > 0).long() % num_classes,
    }


def test_argmax_accuracy_counts_unknown_answers_as_wrong():
    metric = ArgmaxAccuracy()
    # preds 1, 0, 2 ; targets 1, 1, -1 ; second update: indices [2, 2] vs [2, 0]
    metric.update(torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 9.0]]), torch.tensor([1, 1, -1]))
    metric.update(torch.tensor([2, 2]), torch.tensor([2, 0]))
    assert float(metric.compute()) == pytest.approx(2 / 5)
    assert metric._reductions["correct"].__name__ == "dim_zero_sum"
    assert metric._reductions["total"].__name__ == "dim_zero_sum"
    with pytest.raises(ValueError):
        metric.update(torch.zeros(2, 3, 4), torch.zeros(2, dtype=torch.long))


def test_cross_entropy_ignores_minus_one():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]])
    expected = torch.nn.functional.cross_entropy(logits[:2], torch.tensor([0, 1]))
    torch.testing.assert_close(cross_entropy_ignore(logits, torch.tensor([0, 1, -1])), expected)
    zero = cross_entropy_ignore(logits.requires_grad_(), torch.tensor([-1, -1, -1]))
    assert float(zero) == 0.0 and zero.requires_grad


@pytest.mark.parametrize("cls,num_classes", [(GQA, 5), (VisualEntailment, 3)])
def test_training_step_finite_and_backward(cls, num_classes):
    torch.manual_seed(0)
    kw = {"num_answers": num_classes} if cls is GQA else {}
    model = cls(Uniter("tiny", img_dim=IMG_DIM), **kw)
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(64, 32), (num_classes, 64)]
    assert isinstance(model.head[1], torch.nn.GELU) and isinstance(model.head[2], torch.nn.LayerNorm)
    batch = region_batch(4, num_classes)
    batch["labels"][0] = -1
    assert model(batch).shape == (4, num_classes)
    loss = model.training_step(batch, 0)
    assert torch.isfinite(loss)
    loss.backward()
    assert model.head[0].weight.grad is not None
    assert model.backbone.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_head_lr_multiplier_param_groups():
    model = VisualEntailment(
        Uniter("tiny", img_dim=IMG_DIM), lr=2e-5, head_lr_multiplier=10.0, new_backbone_params="none"
    )
    groups = {g["name"]: g for g in model.configure_optimizers()["optimizer"].param_groups}
    assert groups["pretrained"]["lr"] == pytest.approx(2e-5)
    assert groups["new"]["lr"] == pytest.approx(2e-4)
    head_ids = {id(p) for p in model.head.parameters()}
    new_ids = {id(p) for name in ("new", "new_no_decay") for p in groups[name]["params"]}
    assert head_ids == new_ids


def test_gqa_two_round_ticket_fit(tmp_path, quick_trainer, two_round_ticket):
    torch.manual_seed(0)
    model = GQA(Uniter("tiny", img_dim=IMG_DIM), num_answers=3, lr=1e-3)
    train = DataLoader([region_batch(4, 3, seed=s) for s in range(2)], batch_size=None)
    val = DataLoader([region_batch(4, 3, seed=9)], batch_size=None)
    cb = two_round_ticket("val/acc")
    trainer = quick_trainer([cb])
    trainer.fit(model, train, val)
    assert [round(r["sparsity"], 3) for r in cb.results] == [0.0, 0.5]
    assert all(0.0 <= r["score"] <= 1.0 for r in cb.results)
    assert (tmp_path / "t" / "summary.json").is_file()
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    trainer.test(model, val, verbose=False)
    assert 0.0 <= float(trainer.callback_metrics["test/acc"]) <= 1.0
