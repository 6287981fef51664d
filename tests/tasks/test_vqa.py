"""VQA score metric, TaskModule optimiser/schedule, and a short VQA fit on random tensors."""

from __future__ import annotations

import types

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_tickets.backbones import Uniter
from lightning_tickets.data import VLCollator
from lightning_tickets.metrics import VQAScore, vqa_answer_score
from lightning_tickets.tasks import VQA, TaskModule
from lightning_tickets.tasks.base import schedule_length

# ---------------------------------------------------------------------------------------------------- metric


def test_vqa_answer_score_leave_one_out():
    # m matches among 10 annotators: m subsets of 9 have m-1 matches, 10-m have m.
    # m=2: (2 * min(1, 1/3) + 8 * min(1, 2/3)) / 10 = (2/3 + 16/3) / 10 = 0.6
    assert vqa_answer_score(2) == pytest.approx(0.6)
    assert [round(vqa_answer_score(m), 6) for m in (0, 1, 3, 4, 10)] == [0.0, 0.3, 0.9, 1.0, 1.0]
    with pytest.raises(ValueError):
        vqa_answer_score(11)


def test_vqa_score_hand_computed():
    # question 1: 4 annotators said "a" (1.0), 2 said "b" (0.6); model says "b" -> 0.6
    # question 2: 1 annotator said "c" (0.3), 3 said "a" (0.9); model says "c" -> 0.3
    # question 3: 3 annotators said "b" (0.9); model says "a" -> 0.0
    # question 4 (second update): 10 said "c" (1.0); model says "c" -> 1.0
    target = torch.tensor([[1.0, 0.6, 0.0], [0.9, 0.0, 0.3], [0.0, 0.9, 0.0]])
    logits = torch.tensor([[0.0, 5.0, 1.0], [-1.0, -2.0, 0.5], [2.0, 1.0, 0.0]])
    metric = VQAScore()
    metric.update(logits, target)
    metric.update(torch.tensor([2]), torch.tensor([[0.0, 0.0, 1.0]]))  # index predictions
    assert float(metric.compute()) == pytest.approx((0.6 + 0.3 + 0.0 + 1.0) / 4)
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert float(metric.compute()) == 0.0


def test_vqa_score_states_reduce_by_sum():
    metric = VQAScore()
    assert metric._reductions["score_sum"].__name__ == "dim_zero_sum"
    assert metric._reductions["total"].__name__ == "dim_zero_sum"
    with pytest.raises(ValueError):
        metric.update(torch.zeros(2, 3), torch.zeros(2, 4))


# ---------------------------------------------------------------------------------------------------- data


class RandomVQA(Dataset):
    """Answer = parity of the first region's first feature: learnable, random otherwise."""

    def __init__(self, n: int = 48, num_answers: int = 4, img_dim: int = 8, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(n):
            t = int(torch.randint(3, 7, (1,), generator=g))
            r = int(torch.randint(1, 4, (1,), generator=g))
            feat = torch.randn(r, img_dim, generator=g)
            ans = int(feat[0, 0] > 0)
            self.items.append(
                {
                    "input_ids": torch.randint(1, 999, (t,), generator=g),
                    "img_feat": feat,
                    "img_pos_feat": torch.rand(r, 7, generator=g),
                    "answer_ids": torch.tensor([ans, 3]),
                    "answer_scores": torch.tensor([1.0, 0.3]),
                }
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def _loader(**kw) -> DataLoader:
    return DataLoader(RandomVQA(**kw), batch_size=8, collate_fn=VLCollator(num_answers=4))


def _model(**kw) -> VQA:
    torch.manual_seed(0)
    return VQA(Uniter("tiny", img_dim=8), num_answers=4, **kw)


# ---------------------------------------------------------------------------------------------------- task


def test_vqa_forward_loss_and_head():
    model = _model()
    batch = next(iter(_loader()))
    logits = model(batch)
    assert logits.shape == (8, 4)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["targets"]) * 4
    torch.testing.assert_close(model.loss(logits, batch["targets"]), expected)
    head_linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in head_linears] == [(64, 32), (4, 64)]


def test_vqa_cross_entropy_loss_option():
    model = _model(loss="ce")
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 3.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.3, 0.0, 0.6]])
    logp = torch.log_softmax(logits, 1)
    expected = (-logp[0, 0] + -(0.3 * logp[1, 1] + 0.6 * logp[1, 3]) / 0.9) / 2
    torch.testing.assert_close(model.loss(logits, targets), expected)
    with pytest.raises(ValueError, match="loss"):
        _model(loss="mse")


def test_vqa_fit_few_steps(tmp_path):
    model = _model(lr=1e-3)
    before = model.backbone.encoder.layer[0].attention.self.query.weight.detach().clone()
    trainer = L.Trainer(
        max_steps=6,
        val_check_interval=3,
        limit_val_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, _loader(), _loader(seed=1))
    assert trainer.global_step == 6
    metrics = trainer.callback_metrics
    assert 0.0 <= float(metrics["val/vqa_score"]) <= 1.0
    assert float(metrics["val/acc"]) == float(metrics["val/vqa_score"])
    assert torch.isfinite(metrics["train/loss"])
    assert not torch.equal(before, model.backbone.encoder.layer[0].attention.self.query.weight)
    trainer.test(model, _loader(seed=2), verbose=False)
    assert "test/vqa_score" in trainer.callback_metrics


def test_hparams_do_not_pickle_the_backbone():
    model = _model(lr=3e-4)
    assert "backbone" not in model.hparams
    assert model.hparams.lr == 3e-4 and model.hparams.num_answers == 4


def test_parameter_groups_new_layers_and_no_decay(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=100,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    bert = transformers.BertModel(cfg)
    with torch.no_grad():  # trained-looking biases (an all-zero bias marks a never-trained layer)
        for n, p in bert.named_parameters():
            if n.endswith(".bias"):
                p.add_(0.01)
    bert.save_pretrained(tmp_path)
    model = VQA(
        Uniter("tiny", img_dim=8, bert_path=str(tmp_path)),
        num_answers=4,
        lr=1e-4,
        head_lr_multiplier=10.0,
        weight_decay=0.05,
    )
    new = model.new_parameter_names()
    assert "backbone.img_embeddings.img_linear.weight" in new and "head.0.weight" in new
    assert "backbone.encoder.layer.0.attention.self.query.weight" not in new
    groups = {g["name"]: g for g in model.parameter_groups()}
    assert groups["pretrained"]["lr"] == pytest.approx(1e-4) and groups["pretrained"]["weight_decay"] == 0.05
    assert groups["new"]["lr"] == pytest.approx(1e-3)
    assert groups["pretrained_no_decay"]["weight_decay"] == 0.0
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    assert id(model.backbone.img_embeddings.img_linear.weight) in ids["new"]
    assert id(model.backbone.embeddings.LayerNorm.weight) in ids["pretrained_no_decay"]
    assert sum(len(v) for v in ids.values()) == len(list(model.parameters()))
    only_head = VQA(Uniter("tiny", img_dim=8, bert_path=str(tmp_path)), num_answers=4, new_backbone_params="none")
    assert all(n.startswith("head.") for n in only_head.new_parameter_names())
    prefixed = VQA(Uniter("tiny", img_dim=8), num_answers=4, new_backbone_params=["img_embeddings."])
    assert {n.split(".")[1] for n in prefixed.new_parameter_names()} == {"img_embeddings", "0", "2", "4"}


def test_lr_lambda_warmup_then_linear_decay():
    model = _model(warmup_steps=0.2, lr_schedule="linear")
    f = model.lr_lambda(10)  # 2 warm-up steps
    assert [round(f(s), 4) for s in range(11)] == [
        0.3333,
        0.6667,
        1.0,
        0.875,
        0.75,
        0.625,
        0.5,
        0.375,
        0.25,
        0.125,
        0.0,
    ]
    g = _model(warmup_steps=3, lr_schedule="constant").lr_lambda(None)
    assert [g(s) for s in (0, 2, 3, 1000)] == [0.25, 0.75, 1.0, 1.0]
    with pytest.raises(ValueError):
        _model(warmup_steps=1.5)


def test_schedule_spans_one_round_when_ticket_callback_says_so():
    from lightning_tickets.schedule import RoundPlan

    ticket_cb = types.SimpleNamespace(round_plan=RoundPlan([0.0, 0.5], steps_per_round=7))
    trainer = types.SimpleNamespace(callbacks=[object(), ticket_cb], estimated_stepping_batches=100)
    assert schedule_length(trainer) == 7
    trainer.callbacks = [object()]
    assert schedule_length(trainer) == 100
    trainer.estimated_stepping_batches = float("inf")
    assert schedule_length(trainer) is None
    assert schedule_length(None) is None


def test_scheduler_length_in_a_fit(tmp_path):
    seen = {}

    class Probe(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.setdefault("lr", []).append(trainer.optimizers[0].param_groups[0]["lr"])

    model = _model(lr=1e-3, lr_schedule="linear")
    trainer = L.Trainer(
        max_steps=4,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Probe()],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, _loader())
    base = seen["lr"][0]
    assert [round(x / base, 4) for x in seen["lr"]] == [1.0, 0.75, 0.5, 0.25]


def test_task_module_is_the_base():
    assert issubclass(VQA, TaskModule)
