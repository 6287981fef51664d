"""VILLA-style adversarial training: config, PGD maths, symmetric KL, every backbone and task, masks, yaml."""

from __future__ import annotations

import io
import sys

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml
from test_lxmert_vilt import IMG_DIM, _lx_batch, _vilt_batch
from torch.utils.data import DataLoader, Dataset

import lightning_tickets.tasks.adversarial as adv
import lightning_tickets.tasks.base as task_base
from lightning_tickets import LotteryTicketCallback
from lightning_tickets.backbones import BackboneOutput, Lxmert, Uniter, Vilt, VLBackbone
from lightning_tickets.tasks import (
    GQA,
    NLVR2,
    VCR,
    VQA,
    ImageTextRetrieval,
    Pretraining,
    ReferringExpression,
    VisualEntailment,
)
from lightning_tickets.tasks.adversarial import (
    AdversarialConfig,
    Logits,
    ascent_direction,
    example_norms,
    pgd_step,
    project,
    random_start,
    symmetric_kl,
)

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
BACKBONES = ("uniter", "lxmert", "vilt")


def backbone(name: str, dropout: bool = True) -> VLBackbone:
    kw = {} if dropout else {"config_overrides": NO_DROPOUT}
    if name == "uniter":
        return Uniter("tiny", img_dim=IMG_DIM, **kw)
    if name == "lxmert":
        return Lxmert("tiny", img_dim=IMG_DIM, **kw)
    return Vilt("tiny", **kw)


def vqa_batch(name: str, b: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """The LXMERT/ViLT test batches (padded text; padded regions / pixels) plus VQA soft targets."""
    batch = _vilt_batch(b, seed) if name == "vilt" else _lx_batch(b, seed)
    g = torch.Generator().manual_seed(seed + 100)
    return {**batch, "targets": torch.rand(b, 4, generator=g)}


def vqa(name: str, adversarial=None, dropout: bool = True, seed: int = 0, **kw) -> VQA:
    torch.manual_seed(seed)
    return VQA(backbone(name, dropout), num_answers=4, adversarial=adversarial, **kw)


class Spy:
    """Wraps ``adversarial_terms`` (as called by TaskModule.training_step) and every delta added to an embedding."""

    def __init__(self, monkeypatch) -> None:
        self.terms: list[adv.AdversarialTerms] = []
        self.deltas: list[tuple[str, torch.Tensor, torch.Tensor]] = []  # (modality, delta, mask)
        real_terms, real_call = adv.adversarial_terms, adv._AddDeltas.__call__
        spy = self

        def terms(*args, **kwargs):
            out = real_terms(*args, **kwargs)
            spy.terms.append(out)
            return out

        def call(self, modality, embeddings, mask):
            delta = self.deltas.get(self.calls)
            if delta is not None:
                spy.deltas.append((modality, delta.detach().clone(), mask.detach().clone()))
            return real_call(self, modality, embeddings, mask)

        monkeypatch.setattr(task_base, "adversarial_terms", terms)
        monkeypatch.setattr(adv._AddDeltas, "__call__", call)


# ------------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": -1}, r"steps=-1\): steps must be an int >= 0"),
        ({"steps": 1.5}, r"steps=1.5\)"),
        ({"norm": "l1"}, r"norm='l1'\): norm must be 'l2' or 'linf'"),
        ({"epsilon": -0.1}, r"epsilon=-0.1\): epsilon must be a finite float >= 0"),
        ({"epsilon": {"text": 1.0}}, r"no radius for modality \['image'\]"),
        ({"epsilon": {"txt": 1.0}}, r"unknown modality \['txt'\]"),
        ({"step_size": 0.0}, r"step_size=0.0\): step_size must be a float > 0"),
        ({"kl_weight": -1.0}, r"kl_weight=-1.0\): kl_weight must be a float >= 0"),
        ({"init_std": -1.0}, r"init_std=-1.0\)"),
        ({"modalities": ("audio",)}, r"modalities=\('audio',\)\): give distinct modalities among \['text', 'image'\]"),
        ({"modalities": ()}, r"give distinct modalities"),
    ],
)
def test_config_errors_name_the_value_and_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdversarialConfig(**kwargs)


def test_config_defaults_per_modality_values_and_coercion():
    cfg = AdversarialConfig()
    assert (cfg.steps, cfg.norm, cfg.modalities, cfg.enabled) == (3, "l2", ("text", "image"), True)
    assert cfg.step("text") == pytest.approx(2.5 * 1.0 / 3)
    cfg = AdversarialConfig(steps=2, epsilon={"text": 0.5, "image": 4.0}, step_size={"text": 0.1, "image": 1.0})
    assert (cfg.radius("text"), cfg.radius("image"), cfg.step("text"), cfg.step("image")) == (0.5, 4.0, 0.1, 1.0)
    assert AdversarialConfig(modalities=["image"]).modalities == ("image",)
    assert not AdversarialConfig(steps=0).enabled
    assert AdversarialConfig.coerce({"steps": 2, "norm": "linf"}) == AdversarialConfig(steps=2, norm="linf")
    assert AdversarialConfig.coerce(None) is None
    with pytest.raises(TypeError, match="adversarial must be"):
        AdversarialConfig.coerce(3)


def test_config_survives_a_weights_only_checkpoint_load():
    model = vqa("uniter", AdversarialConfig(steps=2, epsilon={"text": 0.5, "image": 2.0}))
    buf = io.BytesIO()
    torch.save({"hyper_parameters": dict(model.hparams)}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)["hyper_parameters"]["adversarial"]
    assert loaded == model.adversarial


def test_checkpoints_that_name_the_old_module_path_still_load(monkeypatch):
    """Checkpoints written before the module moved to ``tasks/`` pickle ``lightning_tickets.adversarial.*``."""
    import lightning_tickets.adversarial as old_path

    assert old_path.AdversarialConfig is AdversarialConfig and old_path.adversarial_terms is adv.adversarial_terms
    config = AdversarialConfig(steps=2, epsilon=0.5)
    monkeypatch.setattr(AdversarialConfig, "__module__", "lightning_tickets.adversarial")
    buf = io.BytesIO()
    torch.save({"hyper_parameters": {"adversarial": config}}, buf)
    monkeypatch.undo()
    assert b"lightning_tickets.adversarial\nAdversarialConfig" in buf.getvalue().replace(b"\r", b"")
    buf.seek(0)
    assert torch.load(buf, weights_only=True)["hyper_parameters"]["adversarial"] == config


# ------------------------------------------------------------------------------------------------------ maths
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_projection_and_pgd_steps_never_leave_the_ball(norm):
    g = torch.Generator().manual_seed(0)
    eps = 0.7
    mask = torch.rand(5, 6, generator=g) > 0.3
    delta = random_start((5, 6, 4), mask, std=3.0, epsilon=eps, norm=norm)
    for _ in range(20):
        grad = torch.randn(5, 6, 4, generator=g) * 10 ** float(torch.randint(-6, 6, (1,), generator=g))
        delta = pgd_step(delta, grad, step_size=0.5, epsilon=eps, norm=norm, mask=mask)
        assert float(example_norms(delta, norm).max()) <= eps * (1 + 1e-6)
        assert torch.count_nonzero(delta[~mask]) == 0  # padding is never perturbed
    assert float(example_norms(delta, norm).max()) == pytest.approx(eps, rel=1e-5)  # large steps reach the boundary
    big = torch.randn(4, 3, 2, generator=g) * 50
    assert float(example_norms(project(big, eps, norm), norm).max()) <= eps * (1 + 1e-6)
    small = torch.full((2, 3, 2), 1e-3)
    assert torch.equal(project(small, eps, norm), small)  # inside the ball: unchanged


def test_l2_projection_is_per_example_frobenius():
    delta = torch.zeros(2, 2, 2)
    delta[0, 0, 0], delta[0, 1, 1] = 3.0, 4.0  # norm 5 -> scaled by 1/5
    delta[1, 0, 0] = 0.5  # norm 0.5 -> kept
    out = project(delta, 1.0, "l2")
    torch.testing.assert_close(out[0], delta[0] / 5)
    torch.testing.assert_close(out[1], delta[1])
    direction = ascent_direction(torch.tensor([[[3.0, 0.0], [0.0, 4.0]], [[0.0, 0.0], [0.0, float("nan")]]]))
    torch.testing.assert_close(example_norms(direction), torch.tensor([1.0, 0.0]))
    assert torch.equal(ascent_direction(torch.tensor([[-2.0, 0.0, 3.0]]), "linf"), torch.tensor([[-1.0, 0.0, 1.0]]))


def test_symmetric_kl_matches_its_definition():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    lp, lq = F.log_softmax(a, -1), F.log_softmax(b, -1)
    expected = F.kl_div(lq, lp, log_target=True, reduction="batchmean") + F.kl_div(
        lp, lq, log_target=True, reduction="batchmean"
    )
    torch.testing.assert_close(symmetric_kl(Logits(a), Logits(b)), expected)
    p, q = torch.sigmoid(a), torch.sigmoid(b)
    bern = (
        p * (p / q).log()
        + (1 - p) * ((1 - p) / (1 - q)).log()
        + q * (q / p).log()
        + (1 - q) * ((1 - q) / (1 - p)).log()
    )
    torch.testing.assert_close(symmetric_kl(Logits(a, "bernoulli"), Logits(b, "bernoulli")), bern.sum(1).mean())
    for kind in ("categorical", "bernoulli"):
        assert float(symmetric_kl(Logits(a, kind), Logits(a.clone(), kind))) == 0.0
        assert float(symmetric_kl(Logits(a, kind), Logits(b, kind))) > 0.0
    masked = torch.tensor([[0.0, 1.0, -1e4]])  # a padded region (refexp): finite
    assert torch.isfinite(symmetric_kl(Logits(masked), Logits(masked + torch.tensor([[0.5, 0.0, 0.0]]))))
    with pytest.raises(ValueError, match="differ"):
        symmetric_kl(Logits(a), Logits(b[:2]))


# --------------------------------------------------------------------------------------------- training steps
@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_perturbations_stay_in_the_ball_on_every_backbone(name, norm, monkeypatch):
    spy = Spy(monkeypatch)
    eps = {"text": 0.3, "image": 0.6}
    cfg = AdversarialConfig(steps=3, epsilon=eps, step_size={"text": 1.0, "image": 2.0}, norm=norm, init_std=1.0)
    model = vqa(name, cfg)
    loss = model.training_step(vqa_batch(name), 0)
    loss.backward()
    assert torch.isfinite(loss)
    seen = {m for m, _, _ in spy.deltas}
    assert seen == {"text", "image"}
    # (steps + 1) passes per modality, one site per modality and pass
    assert len(spy.deltas) == 2 * (cfg.steps + 1)
    for modality, delta, mask in spy.deltas:
        norms = example_norms(delta, norm)
        assert float(norms.max()) <= eps[modality] * (1 + 1e-5), (modality, norms)
        assert torch.count_nonzero(delta[~mask]) == 0, modality
    final = {m: d for m, d, _ in spy.deltas}  # the last delta of each modality: big steps end on the sphere
    for modality, delta in final.items():
        assert float(example_norms(delta, norm).max()) == pytest.approx(eps[modality], rel=1e-4)
    (terms,) = spy.terms
    assert terms.modalities == ["text", "image"] and float(terms.kl) > 0


@pytest.mark.parametrize("name", BACKBONES)
def test_steps_zero_is_exactly_standard_training(name):
    batch = vqa_batch(name)
    results = []
    for cfg in (None, AdversarialConfig(steps=0), AdversarialConfig(steps=1)):
        model = vqa(name, cfg).train()
        torch.manual_seed(123)  # same dropout masks
        loss = model.training_step(batch, 0)
        loss.backward()
        results.append((loss.detach(), [p.grad for p in model.parameters()]))
    (ref, ref_grads), (zero, zero_grads), (one, _) = results
    assert torch.equal(ref, zero)
    assert sum(g is not None for g in ref_grads) > 10
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(ref_grads, zero_grads))
    assert not torch.equal(ref, one)  # the check can fail: adversarial terms do change the loss


@pytest.mark.parametrize("name", BACKBONES)
def test_zero_perturbation_gives_zero_kl_and_the_clean_loss(name, monkeypatch):
    spy = Spy(monkeypatch)
    batch = vqa_batch(name)
    model = vqa(name, AdversarialConfig(steps=2, epsilon=0.0, kl_weight=1.0), dropout=False)
    loss = model.training_step(batch, 0)
    clean = model.loss(model(batch), batch["targets"])
    (terms,) = spy.terms
    assert float(terms.kl) == 0.0
    assert torch.equal(terms.loss, clean)  # the perturbed path computes exactly the clean forward
    torch.testing.assert_close(loss, 2 * clean)
    assert all(torch.count_nonzero(d) == 0 for _, d, _ in spy.deltas)
    spy.terms.clear()
    vqa(name, AdversarialConfig(steps=2, epsilon=0.5), dropout=False).training_step(batch, 0)
    assert float(spy.terms[0].kl) > 0.0


def _graph_size(t: torch.Tensor) -> int:
    seen, stack = set(), [t.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        stack.extend(f for f, _ in fn.next_functions)
    return len(seen)


def test_inner_steps_keep_no_graph_and_no_parameter_gradients():
    batch = vqa_batch("uniter")
    sizes = []
    for steps in (1, 4):
        model = vqa("uniter", AdversarialConfig(steps=steps, init_std=0.1))
        loss = model.training_step(batch, 0)
        assert all(p.grad is None for p in model.parameters())  # inner steps took input gradients only
        sizes.append(_graph_size(loss))
    assert sizes[0] == sizes[1]  # the graph of the returned loss does not grow with the number of steps


# ----------------------------------------------------------------------------------------------- every task
def _rows(n: int, g: torch.Generator, r: int = 3) -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.randint(5, 900, (n, 5), generator=g),
        "attention_mask": torch.ones(n, 5, dtype=torch.long),
        "img_feat": torch.randn(n, r, IMG_DIM, generator=g),
        "img_pos_feat": torch.rand(n, r, 7, generator=g),
        "img_attention_mask": torch.ones(n, r, dtype=torch.long),
    }


def _task_case(task: str, cfg: AdversarialConfig):
    g = torch.Generator().manual_seed(0)
    bb = Uniter("tiny", img_dim=IMG_DIM)
    if task == "gqa":
        return GQA(bb, num_answers=5, adversarial=cfg), {**_rows(3, g), "labels": torch.tensor([0, 4, -1])}
    if task == "ve":
        return VisualEntailment(bb, adversarial=cfg), {**_rows(3, g), "labels": torch.tensor([0, 1, 2])}
    if task == "nlvr2":
        return NLVR2(bb, adversarial=cfg), {**_rows(4, g), "labels": torch.tensor([0, 1])}
    if task == "vcr":
        batch = {"qa": _rows(8, g), "qar": _rows(8, g), "answer_label": torch.tensor([0, 3])}
        return VCR(bb, adversarial=cfg), {**batch, "rationale_label": torch.tensor([1, 2]), "num_choices": 4}
    if task == "refexp":
        batch = {**_rows(2, g), "labels": torch.tensor([2, 0]), "target_box": torch.rand(2, 4, generator=g)}
        batch["img_attention_mask"][1, 2] = 0
        return ReferringExpression(bb, adversarial=cfg), batch
    if task == "retrieval":
        return ImageTextRetrieval(bb, adversarial=cfg), {**_rows(3, g), "itm_labels": torch.tensor([1, 0, 1])}
    batch = {**_rows(2, g), "itm_labels": torch.tensor([1, 1])}
    batch["mlm_labels"] = torch.full((2, 5), -100)
    batch["mlm_labels"][:, 2] = 7
    batch["img_masked"] = torch.tensor([[True, False, False], [False, True, False]])
    mix = "sample" if task == "pretrain-sample" else "sum"  # sample: the drawn objective on matched rows only
    batch["itm_labels"][1] = int(mix == "sum")
    tasks = ["mlm"] if mix == "sample" else ["mlm", "itm", "mrfr"]
    return Pretraining(bb, tasks=tasks, mix=mix, adversarial=cfg), batch


@pytest.mark.parametrize("task", ["gqa", "ve", "nlvr2", "vcr", "refexp", "retrieval", "pretrain", "pretrain-sample"])
def test_every_task_trains_adversarially(task, monkeypatch):
    spy = Spy(monkeypatch)
    torch.manual_seed(0)
    model, batch = _task_case(task, AdversarialConfig(steps=1, epsilon=0.5))
    loss = model.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss)
    (terms,) = spy.terms
    assert terms.modalities == ["text", "image"] and float(terms.kl) > 0
    assert model.backbone.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    assert model.hparams.adversarial == AdversarialConfig(steps=1, epsilon=0.5)


class _TextOnly(VLBackbone):
    perturbable_modalities = ("text",)

    def __init__(self) -> None:
        super().__init__()
        self.hidden_size = 4
        self.emb = torch.nn.Embedding(10, 4)

    def forward(self, batch):
        mask = torch.ones(batch["input_ids"].shape, dtype=torch.bool)
        x = self.perturb("text", self.emb(batch["input_ids"]), mask)
        return BackboneOutput(x, x.mean(1), mask, mask, torch.zeros_like(mask))


def test_unsupported_modalities_and_tasks_without_training_outputs_are_refused():
    with pytest.raises(ValueError, match=r"\['image'\] embeddings: _TextOnly does not .*\(use modalities=\['text'\]\)"):
        VQA(_TextOnly(), num_answers=2, adversarial=AdversarialConfig())
    model = VQA(_TextOnly(), num_answers=2, adversarial={"modalities": ["text"], "steps": 1})
    loss = model.training_step({"input_ids": torch.tensor([[1, 2, 3]]), "targets": torch.tensor([[1.0, 0.0]])}, 0)
    assert torch.isfinite(loss)

    class Custom(task_base.TaskModule):
        def __init__(self, backbone, adversarial=None):
            super().__init__(backbone, adversarial=adversarial)
            self.head = torch.nn.Linear(4, 2)

        def training_step(self, batch, batch_idx):  # pragma: no cover - never called
            raise AssertionError

    with pytest.raises(ValueError, match="needs Custom.training_outputs"):
        Custom(_TextOnly(), AdversarialConfig(modalities=("text",)))


# ---------------------------------------------------------------------------------------- ticket callback
class _VQAData(Dataset):
    def __init__(self, name: str, n: int = 8) -> None:
        self.items = [{k: v[0] for k, v in vqa_batch(name, 1, seed=i).items()} for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.items[i]


class _MasksExact(L.Callback):
    """After every step (listed after the ticket callback, so its masks are applied): pruned weights are 0."""

    def __init__(self, cb: LotteryTicketCallback) -> None:
        self.cb, self.checked = cb, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.cb.masks is None:
            return
        params = dict(pl_module.named_parameters())
        for n, m in self.cb.masks.items():
            assert torch.count_nonzero(params[n].detach()[~m]) == 0, n
        self.checked += 1


@pytest.mark.parametrize("name", BACKBONES)
def test_masks_stay_exact_with_the_lottery_ticket_callback(name, tmp_path):
    model = vqa(name, AdversarialConfig(steps=2, epsilon=0.5, init_std=0.1), lr=1e-2)
    cb = LotteryTicketCallback(
        0.5, rate=0.5, epochs_per_round=1, monitor=None, ticket_dir=str(tmp_path / "tickets"), plot=False
    )
    check = _MasksExact(cb)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        callbacks=[cb, check],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.fit(model, DataLoader(_VQAData(name), batch_size=4))
    assert trainer.global_step == 4 and check.checked >= 2  # steps of the pruned round were checked
    masks = cb.masks
    kept = sum(int(m.sum()) for m in masks.values())
    assert abs(1 - kept / sum(m.numel() for m in masks.values()) - 0.5) < 1e-3
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert torch.count_nonzero(params[n].detach()[~m]) == 0, n
    trained = [n for n, m in masks.items() if not torch.equal(params[n].detach()[m], before[n][m])]
    assert len(trained) > len(masks) // 2  # the kept weights did train
    assert torch.isfinite(trainer.callback_metrics["train/adv_kl"])


# ----------------------------------------------------------------------------------------------------- yaml
YAML = """
model:
  class_path: lightning_tickets.tasks.VQA
  init_args:
    num_answers: 4
    adversarial:
      steps: 2
      epsilon: {text: 0.5, image: 2.0}
      norm: linf
      modalities: [image]
    backbone:
      class_path: lightning_tickets.backbones.Uniter
      init_args: {preset: tiny, img_dim: 8}
data:
  class_path: lightning_tickets.toy.ToyDataModule
trainer:
  logger: false
"""


def _cli(path, *extra):
    from lightning.pytorch.cli import LightningCLI

    return LightningCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        save_config_callback=None,
        args=["--config", str(path), *extra],
    )


def test_yaml_and_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["lightning-tickets"])
    path = tmp_path / "adv.yaml"
    path.write_text(YAML)
    model = _cli(path, "--model.init_args.adversarial.steps=3").model
    assert model.adversarial == AdversarialConfig(
        steps=3, epsilon={"text": 0.5, "image": 2.0}, norm="linf", modalities=("image",)
    )
    assert _cli(path, "--model.init_args.adversarial=null").model.adversarial is None
    with pytest.raises((SystemExit, ValueError)) as bad:
        _cli(path, "--model.init_args.adversarial.epsilon=-1")
    assert "epsilon must be a finite float >= 0" in str(bad.value) + capsys.readouterr().err
    from lightning_tickets.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(path), "--print_config"])
    assert exc.value.code in (None, 0)
    printed = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["adversarial"]
    assert printed["steps"] == 2 and printed["modalities"] == ["image"] and printed["norm"] == "linf"


# ------------------------------------------------------------------------------------------------------ DDP
@pytest.mark.slow
def test_ddp_ranks_agree_and_masks_stay_exact(tmp_path):
    from helpers.launch import run_helper

    run_helper("ddp_run.py", "adversarial", "ddp_find_unused_parameters_true", tmp_path, cwd=tmp_path, timeout=300)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["steps"] == r1["steps"] == 8
    for n in r0["final"]:
        assert torch.equal(r0["final"][n], r1["final"][n]), n
    for n, m in r0["masks"].items():
        assert torch.equal(m, r1["masks"][n]), n
        assert torch.count_nonzero(r0["final"][n][~m]) == 0, n
