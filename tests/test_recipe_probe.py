"""benchmarks/recipe_probe.py without training: candidate definitions, the model changes they make (frozen encoder,
img_embeddings learning rate, pooler), and the report's statistics against hand-computed values."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rp():
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    import recipe_probe

    return recipe_probe


def _cell(rp, candidate, seed, test, color, shape, yesno, spec=None, sps=0.5):
    return {
        "candidate": candidate,
        "seed": seed,
        "spec": spec or rp.candidate_spec("base"),
        "config": "examples/easy_vqa/imp.yaml",
        "command": f"python benchmarks/recipe_probe.py --candidates {candidate}",
        "test": test,
        "test_by_type": {"color": color, "shape": shape, "yesno": yesno},
        "test_questions": 9673,
        "curve": [{"step": 100, "val": 0.68, "val_by_type": {}, "train_loss": 1.0}],
        "steps": 500,
        "threads": 1,
        "seconds_per_step": sps,
        "seconds": 300.0,
    }


def test_candidate_specs(rp):
    base = rp.candidate_spec("base")
    assert base == {**rp.DEFAULTS, "overrides": []}
    assert rp.candidate_spec("warmup")["overrides"] == ["--model.init_args.warmup_steps=50"]
    combo = rp.candidate_spec("warmup+probe+imglr")
    assert combo["freeze_steps"] == 100 and combo["img_lr_multiplier"] == 3.0
    assert combo["overrides"] == ["--model.init_args.warmup_steps=50"]
    assert rp.candidate_spec("long")["steps"] == 750
    assert rp.candidate_spec("cls")["pooler"] == "first_token"
    assert rp.candidate_spec("base")["overrides"] == []  # combining did not mutate the defaults
    with pytest.raises(ValueError, match="'nope'.*unknown"):
        rp.candidate_spec("base+nope")
    extra = rp.parse_define(['p200={"freeze_steps": 200}', 'bad={"colour": 1}'])
    assert rp.candidate_spec("p200+warmup", extra)["freeze_steps"] == 200
    with pytest.raises(ValueError, match="'probe' sets freeze_steps=100, 'p200' 200"):
        rp.candidate_spec("probe+p200", extra)
    with pytest.raises(ValueError, match="field 'colour' is unknown"):
        rp.candidate_spec("bad", extra)
    with pytest.raises(ValueError, match="NAME=JSON"):
        rp.parse_define(["a+b={}"])


def _tiny_vqa():
    from lightning_tickets.backbones import Uniter
    from lightning_tickets.tasks import VQA

    torch.manual_seed(0)
    return VQA(Uniter("tiny", img_dim=6), num_answers=5, lr=1e-4, head_lr_multiplier=10.0, new_backbone_params="none")


def test_img_lr_groups(rp):
    model = _tiny_vqa()
    rp.split_img_lr(model, 3.0)
    groups = model.configure_optimizers()["optimizer"].param_groups
    img = {id(p) for p in model.backbone.img_embeddings.parameters()}
    head = {id(p) for p in model.head.parameters()}
    for g in groups:
        ids = {id(p) for p in g["params"]}
        expected = 3e-4 if ids <= img else (1e-3 if ids <= head else 1e-4)
        assert not (ids & img) or ids <= img, g["name"]  # img_embeddings never share a group
        assert g["lr"] == pytest.approx(expected), g["name"]
    n_opt = sum(len(g["params"]) for g in groups)
    assert n_opt == sum(1 for _ in model.parameters())  # nothing lost or duplicated


def test_freeze_encoder_then_unfreeze(rp):
    model = _tiny_vqa()
    cb = rp.FreezeEncoder(2)

    class T:
        global_step = 0

    cb.on_train_start(T, model)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(rp.FROZEN_PREFIXES) for n in frozen)
    assert {n for n, _ in model.named_parameters() if n.startswith(rp.FROZEN_PREFIXES)} == frozen
    assert all(p.requires_grad for p in model.backbone.img_embeddings.parameters())
    T.global_step = 1
    cb.on_train_batch_start(T, model, None, 1)
    assert not any(p.requires_grad for n, p in model.named_parameters() if n in frozen)
    T.global_step = 2
    cb.on_train_batch_start(T, model, None, 2)
    assert all(p.requires_grad for p in model.parameters())


def test_first_token_pooler(rp):
    seq = torch.arange(24.0).reshape(2, 3, 4)
    assert torch.equal(rp.FirstToken()(seq), seq[:, 0])


def test_summary_statistics_by_hand(rp):
    cells = [
        _cell(rp, "base", 0, 0.99, 0.95, 1.00, 0.99, sps=0.4),
        _cell(rp, "base", 1, 0.70, 0.12, 0.90, 0.83, sps=0.6),
        _cell(rp, "base", 2, 0.97, 0.99, 0.89, 0.99, sps=0.5),
        _cell(rp, "base", 3, 0.86, 0.90, 0.90, 0.90, sps=0.5),
        _cell(rp, "warmup", 1, 0.99, 1.0, 1.0, 0.98, spec=rp.candidate_spec("warmup")),
    ]
    rows = rp.summarise(cells)
    assert [r["candidate"] for r in rows] == ["base", "warmup"]
    b = rows[0]
    assert b["n"] == 4 and b["by_seed"] == {0: 0.99, 1: 0.70, 2: 0.97, 3: 0.86}
    assert b["mean"] == pytest.approx(0.88)  # 3.52 / 4
    # deviations 0.11, -0.18, 0.09, -0.02: sum of squares 0.053, / (4 - 1)
    assert b["std"] == pytest.approx((0.053 / 3) ** 0.5)
    assert b["min"] == pytest.approx(0.70)
    assert b["n_bar"] == 2  # 0.99 and 0.97 (>= 0.97 counts)
    assert b["n_types"] == 2  # seed 0, and seed 3 at exactly 0.9; seed 1: colour 0.12; seed 2: shape 0.89
    assert b["type_min"] == pytest.approx({"color": 0.12, "shape": 0.89, "yesno": 0.83})
    assert b["seconds_per_step"] == pytest.approx(0.5)
    w = rows[1]
    assert (w["n"], w["std"], w["n_bar"], w["n_types"]) == (1, 0.0, 1, 1)
    text = rp.render(cells)
    row = "| base | imp.yaml as is | 500 | 99.0 | 70.0 | 97.0 | 86.0 | 88.0 ± 13.3 | 70.0 | 2/4 | 2/4 | "
    row += "12.0 | 89.0 | 83.0 |"
    assert row in text
    assert "| warmup | model.init_args.warmup_steps=50 | 500 | — | 99.0 | — | — |" in text


def test_mixed_settings_refused(rp, tmp_path):
    cells = [_cell(rp, "x", 0, 0.9, 1, 1, 1), _cell(rp, "x", 1, 0.9, 1, 1, 1, spec=rp.candidate_spec("probe"))]
    with pytest.raises(ValueError, match="'x': cells with different settings"):
        rp.summarise(cells)
    for c in cells[:1]:
        (tmp_path / f"{c['candidate']}-s{c['seed']}.json").write_text(json.dumps(c))
    text = rp.write_report(tmp_path, tmp_path / "out" / "recipe.md")
    assert (tmp_path / "out" / "recipe.md").read_text() == text and "| x |" in text
