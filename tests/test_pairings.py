"""Every backbone x task pairing of Gan et al. (AAAI 2022), end to end on tiny OFFICIAL-format data.

For each of the 14 pairings (UNITER: VQA, GQA, SNLI-VE, NLVR2, VCR, RefCOCO+, Flickr30k retrieval, pre-training;
LXMERT: VQA, GQA, NLVR2; ViLT: VQA, NLVR2, retrieval): files generated in ``tmp_path`` (annotations + HDF5 region
features for UNITER, bottom-up TSV for LXMERT, PNG folders for ViLT), the real data module and task module, a
2-round IMP fit (dense, then 50%) with ``LotteryTicketCallback``, then ``trainer.validate``. Checks: masks at
exactly 50% over the ``"encoder"`` scope, masked weights exactly 0, ``summary.json`` with 2 rounds, and the
validation metric equal to the same metric computed here by hand from the model's predictions and the generated
annotations (never from the data module's targets).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from lightning_tickets import LotteryTicketCallback
from lightning_tickets.backbones import Lxmert, Uniter, Vilt
from lightning_tickets.data import (
    Flickr30kDataModule,
    GQADataModule,
    NLVR2DataModule,
    RefCOCODataModule,
    SNLIVEDataModule,
    VCRDataModule,
    VLBatchCollator,
    VQAv2DataModule,
)
from lightning_tickets.data.pretrain import PretrainDataModule
from lightning_tickets.scope import scope_names
from lightning_tickets.tasks import GQA, NLVR2, VCR, VQA, ImageTextRetrieval, Pretraining, ReferringExpression
from lightning_tickets.tasks import VisualEntailment as VE

from fixtures_vl import (  # isort: skip  (tests/ is on sys.path)
    BOXES,
    IMAGE_H,
    IMAGE_W,
    nlvr2_images,
    region_counts,
    write_coco_captions,
    write_flickr30k,
    write_gqa,
    write_h5,
    write_nlvr2,
    write_pngs,
    write_refcoco,
    write_snli_ve,
    write_tokenizer,
    write_tsv,
    write_vcr,
    write_vqa_v2,
)

pytest.importorskip("h5py")
pytest.importorskip("PIL")

DIM = 8  # region feature dimension
SOFT_CLASSES = 5  # detector classes of the pre-training soft labels

PAIRINGS = [
    ("uniter", "vqa"), ("uniter", "gqa"), ("uniter", "ve"), ("uniter", "nlvr2"), ("uniter", "vcr"),
    ("uniter", "refcoco"), ("uniter", "retrieval"), ("uniter", "pretrain"),
    ("lxmert", "vqa"), ("lxmert", "gqa"), ("lxmert", "nlvr2"),
    ("vilt", "vqa"), ("vilt", "nlvr2"), ("vilt", "retrieval"),
]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread avoids pool synchronisation on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> str:
    return write_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@dataclass
class Case:
    dm: L.LightningDataModule
    model: L.LightningModule
    monitor: str
    by_hand: Callable[[Any, Any], dict[str, float]]  # (model, dm) -> {metric: value}
    mode: str = "max"


def image_source(kind: str, directory: Path, image_ids: list[str], soft: bool = False) -> dict[str, Any]:
    """Data-module keyword arguments of the image source: HDF5 (UNITER), TSV (LXMERT) or PNGs (ViLT)."""
    counts = region_counts(image_ids)
    if kind == "uniter":
        path = write_h5(directory / "features.h5", counts, DIM, soft_classes=SOFT_CLASSES if soft else None)
        return {"features": path, "img_dim": DIM}
    if kind == "lxmert":
        return {"features": write_tsv(directory / "features_obj36.tsv", counts, DIM), "img_dim": DIM}
    return {"features": write_pngs(directory / "images", image_ids), "image_size": 32, "max_size": 64}


def make_backbone(kind: str, task: str) -> Any:
    if kind == "uniter":
        return Uniter("tiny", img_dim=DIM)
    if kind == "lxmert":
        return Lxmert("tiny", img_dim=DIM)
    return Vilt("tiny", modality_type_vocab_size=3 if task == "nlvr2" else None)


def loader_kwargs(tokenizer: str) -> dict[str, Any]:
    return {"tokenizer_path": tokenizer, "batch_size": 2, "eval_batch_size": 64, "num_workers": 0}


@torch.no_grad()
def val_batches(model: Any, dm: Any) -> list[dict[str, Any]]:
    model.eval()
    return list(dm.val_dataloader())


# ------------------------------------------------------------------------------------------------------ VQA
VQA_SCORE = (0.0, 0.3, 0.6, 0.9, 1.0)


def vqa_case(kind: str, d: Path, tok: str) -> Case:
    ids = [f"COCO_{s}2014_{i:012d}" for s in ("train", "val") for i in (1, 2, 3, 4)]
    src = image_source(kind, d, ids)
    train = [(i, q, [a] * 10) for i, q, a in
             [(1, "what color is the car?", "red"), (2, "is there a dog?", "yes"), (3, "is it a cat?", "no"),
              (4, "what color is the dog?", "green")]]  # fmt: skip
    val = [
        (1, "is there a man?", ["yes"] * 2 + ["no"] * 8),
        (2, "what color is it?", ["green"] + ["red"] * 3 + ["blue"] * 6),  # "blue" is outside the vocabulary
        (3, "what is it?", ["cat"] * 10),  # nothing in the vocabulary: scores 0 whatever the prediction
        (4, "is the man sitting?", ["no"] * 4 + ["yes"] * 6),
    ]
    tq, ta = write_vqa_v2(d, "train", train)
    vq, va = write_vqa_v2(d, "val", val)
    answers = {1000 * img + k: ans for k, (img, _, ans) in enumerate(val)}
    dm = VQAv2DataModule(
        train_questions=tq, train_annotations=ta, val_questions=vq, val_annotations=va, min_answer_count=1,
        image_key="COCO_{subtype}_{image_id:012d}", **src, **loader_kwargs(tok),
    )  # fmt: skip
    assert sorted(dm.answers) == ["green", "no", "red", "yes"]

    def by_hand(model: Any, dm: Any) -> dict[str, float]:
        scores = []
        for batch in val_batches(model, dm):
            for qid, idx in zip(batch["question_id"], model(batch).argmax(1).tolist()):
                count = answers[int(qid)].count(dm.answers[idx])
                scores.append(VQA_SCORE[min(count, 4)])
        assert len(scores) == len(val)
        return {"val/vqa_score": sum(scores) / len(scores)}

    return Case(dm, VQA(make_backbone(kind, "vqa"), num_answers=dm.num_answers), "val/vqa_score", by_hand)


# ------------------------------------------------------------------------------------------------------ GQA
def gqa_case(kind: str, d: Path, tok: str) -> Case:
    ids = ["n100", "n101", "n102"]
    src = image_source(kind, d, ids)
    train = [("201", "n100", "is it red?", "yes"), ("202", "n101", "what is it?", "dog"),
             ("203", "n102", "is it a cat?", "no"), ("204", "n100", "what color is it?", "red")]  # fmt: skip
    val = [("301", "n101", "is there a cat?", "no"), ("302", "n102", "what is on the left?", "cat"),  # cat: unknown
           ("303", "n100", "what color?", "red"), ("304", "n101", "is it a dog?", "yes")]  # fmt: skip
    gold = {qid: a for qid, _, _, a in val}
    dm = GQADataModule(
        train_file=write_gqa(d / "train_balanced_questions.json", train),
        val_file=write_gqa(d / "testdev_balanced_questions.json", val), **src, **loader_kwargs(tok),
    )  # fmt: skip

    def by_hand(model: Any, dm: Any) -> dict[str, float]:
        right = [
            dm.answers[i] == gold[qid]
            for batch in val_batches(model, dm)
            for qid, i in zip(batch["question_id"], model(batch).argmax(1).tolist())
        ]
        assert len(right) == len(val)
        return {"val/acc": sum(right) / len(right)}

    return Case(dm, GQA(make_backbone(kind, "gqa"), num_answers=dm.num_answers), "val/acc", by_hand)


# -------------------------------------------------------------------------------------------------- SNLI-VE
def ve_case(kind: str, d: Path, tok: str) -> Case:
    ids = ["3416050480", "1000092795", "2513260012"]
    src = image_source(kind, d, ids)
    train = [(ids[0], "a man is sitting.", "entailment"), (ids[1], "a dog is red.", "neutral"),
             (ids[2], "the woman is sleeping.", "contradiction"), (ids[0], "two dogs.", "neutral")]  # fmt: skip
    val = [(ids[1], "a man is standing.", "contradiction"), (ids[2], "a cat.", "entailment"),
           (ids[0], "a red car.", "neutral")]  # fmt: skip
    labels = ("entailment", "neutral", "contradiction")
    val_file = write_snli_ve(d / "snli_ve_dev.jsonl", val)
    gold = {json.loads(line)["pairID"]: labels.index(g) for line, (_, _, g) in zip(Path(val_file).open(), val)}
    dm = SNLIVEDataModule(
        train_file=write_snli_ve(d / "snli_ve_train.jsonl", train), val_file=val_file, **src, **loader_kwargs(tok)
    )

    def by_hand(model: Any, dm: Any) -> dict[str, float]:
        right = [
            i == gold[pid]
            for batch in val_batches(model, dm)
            for pid, i in zip(batch["pair_id"], model(batch).argmax(1).tolist())
        ]
        return {"val/acc": sum(right) / len(val)}

    return Case(dm, VE(make_backbone(kind, "ve")), "val/acc", by_hand)


# ---------------------------------------------------------------------------------------------------- NLVR2
def nlvr2_case(kind: str, d: Path, tok: str) -> Case:
    train = [
        ("train-1-0-0", "the left image has two dogs.", True), ("train-2-1-1", "there is a cat.", False),
        ("train-3-0-0", "a man is sitting.", True), ("train-4-2-3", "no image contains a car.", False),
    ]  # fmt: skip
    val = [("dev-850-0-0", "the right image contains three dogs.", False), ("dev-851-1-2", "a red car.", True),
           ("dev-852-0-1", "two images have a man.", True)]  # fmt: skip
    src = image_source(kind, d, nlvr2_images([r[0] for r in train + val]))
    gold = {ident: int(label) for ident, _, label in val}
    dm = NLVR2DataModule(
        train_file=write_nlvr2(d / "train.json", train), val_file=write_nlvr2(d / "dev.json", val),
        **src, **loader_kwargs(tok),
    )  # fmt: skip

    def by_hand(model: Any, dm: Any) -> dict[str, float]:
        right = [
            i == gold[ident]
            for batch in val_batches(model, dm)
            for ident, i in zip(batch["identifier"], model(batch).argmax(1).tolist())
        ]
        return {"val/acc": sum(right) / len(val)}

    types = [1, 2] if kind == "vilt" else None  # ViLT's recipe: left/right images get modality types 1 and 2
    return Case(dm, NLVR2(make_backbone(kind, "nlvr2"), image_token_types=types), "val/acc", by_hand)


# ------------------------------------------------------------------------------------------------------ VCR
def vcr_case(kind: str, d: Path, tok: str) -> Case:
    ids = ["lsmdc_a/clip_0.jpg", "lsmdc_a/clip_1.jpg", "movieclips_b/x.jpg"]
    src = image_source(kind, d, ids)
    train = [("train-0", ids[0], 0, 1), ("train-1", ids[1], 2, 3), ("train-2", ids[2], 1, 0), ("train-3", ids[0], 3, 2)]
    val = [("val-0", ids[1], 1, 2), ("val-1", ids[2], 3, 0), ("val-2", ids[0], 0, 3)]
    gold = {annot: (a, r) for annot, _, a, r in val}
    dm = VCRDataModule(
        train_file=write_vcr(d / "train.jsonl", train), val_file=write_vcr(d / "val.jsonl", val),
        **src, **loader_kwargs(tok),
    )  # fmt: skip

    def by_hand(model: Any, dm: Any) -> dict[str, float]:
        q2a = qa2r = q2ar = 0
        for batch in val_batches(model, dm):
            qa, qar = model(batch)
            for annot, a, r in zip(batch["annot_id"], qa.argmax(1).tolist(), qar.argmax(1).tolist()):
                q2a += a == gold[annot][0]
                qa2r += r == gold[annot][1]
                q2ar += (a, r) == gold[annot]
        n = len(val)
        return {"val/q2a": q2a / n, "val/qa2r": qa2r / n, "val/q2ar": q2ar / n, "val/acc": q2ar / n}

    return Case(dm, VCR(make_backbone(kind, "vcr")), "val/q2ar", by_hand)


# ------------------------------------------------------------------------------------------------- RefCOCO+
def refcoco_case(kind: str, d: Path, tok: str) -> Case:
    ids = ["581857", "581858", "581859"]
    src = image_source(kind, d, ids)
    n_regions = region_counts(ids)
    rows = [
        (1, 581857, "the man on the left", [12, 8, 26, 24], "train"), (2, 581858, "red car", [50, 0, 50, 50], "train"),
        (3, 581859, "dog on the right", [55, 2, 45, 48], "train"), (4, 581857, "woman", [0, 0, 100, 50], "train"),
        (5, 581858, "a cat", [14, 6, 24, 22], "val"), (6, 581859, "the car", [60, 20, 30, 25], "val"),
        (7, 581857, "man sitting", [52, 0, 48, 50], "val"), (8, 581858, "blue", [0, 40, 8, 8], "val"),
    ]  # fmt: skip
    path = write_refcoco(d / "refcoco+_unc.jsonl", rows)
    val = {ref: (str(img), bbox) for ref, img, _, bbox, split in rows if split == "val"}
    dm = RefCOCODataModule(train_file=path, val_file=path, **src, **loader_kwargs(tok))

    def iou(a: list[float], b: list[float]) -> float:
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        area = lambda x: (x[2] - x[0]) * (x[3] - x[1])  # noqa: E731
        return w * h / (area(a) + area(b) - w * h)

    def by_hand(model: Any, dm: Any) -> dict[str, float]:
        right = []
        for batch in val_batches(model, dm):
            for ref, r in zip(batch["ref_id"], model(batch).argmax(1).tolist()):
                img, (x, y, w, h) = val[int(ref)]
                assert r < n_regions[img]  # padded regions never win
                x1, y1, x2, y2 = BOXES[r]
                pred = [x1 / IMAGE_W, y1 / IMAGE_H, x2 / IMAGE_W, y2 / IMAGE_H]
                target = [x / IMAGE_W, y / IMAGE_H, min(1.0, (x + w) / IMAGE_W), min(1.0, (y + h) / IMAGE_H)]
                right.append(iou(pred, target) >= 0.5)
        assert len(right) == len(val)
        return {"val/acc": sum(right) / len(right)}

    return Case(dm, ReferringExpression(make_backbone(kind, "refcoco")), "val/acc", by_hand)


# ------------------------------------------------------------------------------------------------ Flickr30k
def retrieval_case(kind: str, d: Path, tok: str) -> Case:
    images = [
        ("1000092795", "train", ["two men are sitting.", "a man in a red car."]),
        ("10002456", "train", ["a dog on the left."]),
        ("1000268201", "train", ["a woman is standing.", "a cat sitting on a car."]),
        ("1000344755", "val", ["a man is sleeping.", "the man has a dog."]),
        ("1000366164", "val", ["three dogs."]),
        ("1000523639", "val", ["a woman in blue.", "a green car.", "two cats."]),
    ]
    src = image_source(kind, d, [stem for stem, _, _ in images])
    val = [caps for _, split, caps in images if split == "val"]
    txt2img = [j for j, caps in enumerate(val) for _ in caps]
    img2txts = [[t for t, j in enumerate(txt2img) if j == i] for i in range(len(val))]
    dm = Flickr30kDataModule(
        annotations=write_flickr30k(d / "dataset_flickr30k.json", images), num_negatives=1, **src,
        **loader_kwargs(tok),
    )  # fmt: skip

    @torch.no_grad()
    def by_hand(model: Any, dm: Any) -> dict[str, float]:
        model.eval()
        dataset = dm.datasets["val"]  # the cross product; example k = image k // N_txt, caption k % N_txt
        n_txt, n_img = len(txt2img), len(val)
        assert len(dataset) == n_txt * n_img
        scores = torch.empty(n_txt, n_img)
        collate = VLBatchCollator(pad_token_id=0)
        for k in range(len(dataset)):  # one pair per forward: no padding, no batching
            ex = dataset[k]
            t, i = int(ex["txt_index"]), int(ex["img_index"])
            assert (i, t) == divmod(k, n_txt)
            scores[t, i] = model(collate([ex]))[0]

        def rank(row: torch.Tensor, j: int) -> int:  # pessimistic: ties count against the item
            return int((row >= row[j]).sum()) - 1

        out = {}
        for k in (1, 5, 10):
            out[f"val/ir_r{k}"] = sum(rank(scores[t], txt2img[t]) < k for t in range(n_txt)) / n_txt
            out[f"val/tr_r{k}"] = sum(min(rank(scores[:, i], t) for t in img2txts[i]) < k for i in range(n_img)) / n_img
        out["val/rsum"] = sum(out.values())
        return out

    return Case(dm, ImageTextRetrieval(make_backbone(kind, "retrieval")), "val/rsum", by_hand)


# ------------------------------------------------------------------------------------------------ pre-training
def pretrain_case(kind: str, d: Path, tok: str) -> Case:
    ids = [f"COCO_{s}2014_{i:012d}" for s in ("train", "val") for i in (1, 2, 3)]
    src = image_source(kind, d, ids, soft=True)
    train = [(1, "a man is sitting in a car."), (2, "two dogs on the left."), (3, "a red car."), (1, "a man.")]
    val = [(1, "a woman is standing."), (2, "three cats."), (3, "the dog is sleeping on a car."), (1, "a blue car.")]
    dm = PretrainDataModule(
        train_files=write_coco_captions(d / "captions_train2014.json", train),
        val_files=write_coco_captions(d / "captions_val2014.json", val),
        image_key="COCO_{subtype}_{image_id:012d}", mlm_prob=0.3, mrm_prob=0.3, **src, **loader_kwargs(tok),
    )  # fmt: skip
    own_image = [f"COCO_val2014_{i:012d}" for i, _ in val]

    def by_hand(model: Any, dm: Any) -> dict[str, float]:
        keys = dm.datasets["val"].image_keys
        itm_right = itm_n = mlm_right = mlm_n = 0
        with torch.no_grad():
            for batch in val_batches(model, dm):
                labels = [int(own_image[t] == keys[i]) for t, i in zip(batch["txt_index"], batch["img_index"])]
                assert batch["itm_labels"].tolist() == labels
                intact = torch.where(batch["mlm_labels"] != -100, batch["mlm_labels"], batch["input_ids"])
                plain = {k: v for k, v in batch.items() if k != "img_masked"}  # ITM: intact text and regions
                pooled = model.backbone({**plain, "input_ids": intact}).pooled
                itm = model.head["itm"](pooled).argmax(1)
                itm_right += int((itm == torch.tensor(labels)).sum())
                itm_n += len(labels)
                rows = torch.tensor(labels).bool()  # MLM: masked text, intact regions, matched pairs only
                sub = {k: v[rows] for k, v in plain.items() if isinstance(v, torch.Tensor) and v.dim() > 0}
                seq = model.backbone(sub).sequence
                sel = sub["mlm_labels"] != -100
                hidden = seq[:, : sel.shape[1]][sel]
                emb = model.backbone.embeddings.word_embeddings.weight
                pred = model.head["mlm"](hidden, emb).argmax(1)
                mlm_right += int((pred == sub["mlm_labels"][sel]).sum())
                mlm_n += int(sel.sum())
        assert itm_n == len(val) and mlm_n > 0
        return {"val/itm_acc": itm_right / itm_n, "val/mlm_acc": mlm_right / mlm_n}

    model = Pretraining(make_backbone(kind, "pretrain"), mrc_num_classes=SOFT_CLASSES)
    return Case(dm, model, "val/loss", by_hand, mode="min")


CASES = {
    "vqa": vqa_case, "gqa": gqa_case, "ve": ve_case, "nlvr2": nlvr2_case, "vcr": vcr_case,
    "refcoco": refcoco_case, "retrieval": retrieval_case, "pretrain": pretrain_case,
}  # fmt: skip


@pytest.mark.parametrize(("kind", "task"), PAIRINGS, ids=[f"{k}-{t}" for k, t in PAIRINGS])
def test_pairing_imp_two_rounds_and_metric_by_hand(kind, task, tmp_path, tokenizer):
    L.seed_everything(0)
    case = CASES[task](kind, tmp_path, tokenizer)
    ticket_dir = tmp_path / "t"
    cb = LotteryTicketCallback(
        target_sparsity=0.5, rate=0.5, epochs_per_round=1, monitor=case.monitor, mode=case.mode,
        ticket_dir=str(ticket_dir), plot=False,
    )  # fmt: skip
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=2, limit_train_batches=2, limit_val_batches=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[cb],
    )  # fmt: skip
    trainer.fit(case.model, datamodule=case.dm)

    # the masks: exactly 50% of the encoder scope (never the head), pruned weights exactly 0
    model = case.model
    names = scope_names(model, "encoder")
    assert names and not any(n.startswith("head.") for n in names)
    assert cb.masks is not None and sorted(cb.masks) == sorted(names)
    total = sum(m.numel() for m in cb.masks.values())
    pruned = sum(int((~m).sum()) for m in cb.masks.values())
    assert pruned == round(0.5 * total)
    params = dict(model.named_parameters())

    def assert_pruned_zero() -> None:
        for name, mask in cb.masks.items():
            assert torch.count_nonzero(params[name].detach()[~mask.to(params[name].device)]) == 0, name

    assert_pruned_zero()
    summary = json.loads((ticket_dir / "summary.json").read_text())
    assert [r["sparsity"] for r in summary["rounds"]] == pytest.approx([0.0, 0.5])
    assert all(r["score"] is not None for r in summary["rounds"])
    assert sorted(p.name for p in ticket_dir.glob("round-*.safetensors")) == [f"round-0{r}.safetensors" for r in (0, 1)]

    # the reported metric equals the one computed by hand from the model's own predictions
    (reported,) = trainer.validate(model, datamodule=case.dm, verbose=False)
    assert_pruned_zero()
    expected = case.by_hand(model, case.dm)
    for key, value in expected.items():
        assert reported[key] == pytest.approx(value, abs=1e-6), (key, reported)
    assert case.monitor in reported
