"""Generators of tiny vision-and-language data sets in the OFFICIAL formats (shared by the integration tests).

Everything is written under a given directory; nothing is downloaded. Formats (see ``docs/data.md``):

* tokenizer: a BERT WordPiece ``vocab.txt`` turned into a ``BertTokenizerFast`` directory (``tokenizer.json``);
* image sources: HDF5 region features (our layout), bottom-up-attention TSV (LXMERT's release), PNG folders (ViLT);
* annotations: VQA v2 questions/annotations JSON, GQA balanced questions JSON, SNLI-VE JSON lines, NLVR2 JSON
  lines, VCR JSON lines, RefCOCO+ JSON-lines export, Flickr30k Karpathy JSON, COCO captions JSON.

Every writer returns the path(s) it wrote (``str``), so they can go straight into a data module.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Words of the test vocabulary (lower case; the tokenizer lower-cases).
WORDS = (
    "what is the a an dog dogs cat man woman left right image images has have two three no yes why red blue green "
    "it are on in of there color how many person car sitting sleeping standing . ? , ! contains"
).split()
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

#: Region boxes (pixels x1 y1 x2 y2) of a 100 x 50 image; images use the first ``n``.
BOXES = ((0, 0, 100, 50), (10, 5, 40, 30), (50, 0, 100, 50), (12, 8, 34, 30), (60, 20, 90, 45))
IMAGE_W, IMAGE_H = 100, 50


# ------------------------------------------------------------------------------------------------- tokenizer
def write_tokenizer(directory: str | Path) -> str:
    """``directory`` with ``vocab.txt`` and the ``tokenizer.json`` of a ``BertTokenizerFast`` built from it."""
    from transformers import BertTokenizerFast

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    vocab = d / "vocab.txt"
    vocab.write_text("\n".join([*SPECIALS, *WORDS]) + "\n")
    # positional: ``vocab_file`` in transformers 4, ``vocab`` in 5 (where ``vocab_file=`` is silently ignored)
    tok = BertTokenizerFast(str(vocab), do_lower_case=True)
    assert len(tok) == len(SPECIALS) + len(WORDS), "the WordPiece vocabulary was not loaded"
    tok.save_pretrained(str(d))
    return str(d)


# --------------------------------------------------------------------------------------------- plain files
def write_json(path: str | Path, data: Any) -> str:
    Path(path).write_text(json.dumps(data))
    return str(path)


def write_jsonl(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> str:
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# ------------------------------------------------------------------------------------------- image sources
def region_arrays(k: int, n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random features ``[n, dim]`` (image ``k``) and the first ``n`` of :data:`BOXES`."""
    rng = np.random.default_rng(seed * 7919 + k)
    return rng.standard_normal((n, dim)).astype(np.float32), np.asarray(BOXES[:n], np.float32)


def write_h5(
    path: str | Path, images: Mapping[str, int], dim: int, soft_classes: int | None = None, seed: int = 0
) -> str:
    """HDF5 features (``/<id>/features``, ``/<id>/boxes``, attrs ``image_w``/``image_h``; optional
    ``soft_labels``) for ``images = {image_id: number of regions}``."""
    import h5py

    with h5py.File(path, "w") as f:
        for k, (key, n) in enumerate(images.items()):
            feat, boxes = region_arrays(k, n, dim, seed)
            g = f.create_group(str(key))
            g.create_dataset("features", data=feat.astype(np.float16))
            g.create_dataset("boxes", data=boxes)
            if soft_classes:
                logits = np.random.default_rng(k).standard_normal((n, soft_classes))
                soft = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
                g.create_dataset("soft_labels", data=soft.astype(np.float32))
            g.attrs["image_w"], g.attrs["image_h"] = IMAGE_W, IMAGE_H
    return str(path)


def write_tsv(path: str | Path, images: Mapping[str, int], dim: int, seed: int = 0) -> str:
    """Bottom-up-attention TSV (LXMERT's ``FIELDNAMES``: img_id, img_h, img_w, objects_id, objects_conf, attrs_id,
    attrs_conf, num_boxes, boxes, features; arrays base64-encoded)."""

    def b64(a: np.ndarray) -> str:
        return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()

    lines = []
    for k, (key, n) in enumerate(images.items()):
        feat, boxes = region_arrays(k, n, dim, seed)
        fields = [
            str(key), str(IMAGE_H), str(IMAGE_W), b64(np.arange(n, dtype=np.int64)), b64(np.ones(n, np.float32)),
            b64(np.zeros(n, np.int64)), b64(np.ones(n, np.float32)), str(n), b64(boxes), b64(feat),
        ]  # fmt: skip
        lines.append("\t".join(fields) + "\n")
    Path(path).write_text("".join(lines))
    return str(path)


def write_pngs(
    root: str | Path, image_ids: Sequence[str], sizes: Sequence[tuple[int, int]] = ((40, 32), (32, 48))
) -> str:
    """A folder of random-colour PNGs ``<id>.png`` (sizes cycle through ``sizes`` = (width, height))."""
    from PIL import Image

    d = Path(root)
    d.mkdir(parents=True, exist_ok=True)
    for k, key in enumerate(image_ids):
        w, h = sizes[k % len(sizes)]
        pixels = np.random.default_rng(k).integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(d / f"{key}.png")
    return str(d)


def region_counts(image_ids: Sequence[str], low: int = 2) -> dict[str, int]:
    """``{id: regions}`` with 2, 3, 4, 2, 3, ... regions (different counts exercise padding)."""
    return {key: low + k % 3 for k, key in enumerate(image_ids)}


# --------------------------------------------------------------------------------------------- annotations
def write_vqa_v2(
    directory: str | Path, split: str, rows: Sequence[tuple[int, str, Sequence[str]]], subtype: str | None = None
) -> tuple[str, str]:
    """Official ``v2_OpenEnded_mscoco_<subtype>_questions.json`` + ``v2_mscoco_<subtype>_annotations.json``.

    ``rows``: ``(image_id, question, 10 answers)``; question ids are ``1000 * image_id + k``.
    """
    subtype = subtype or f"{split}2014"
    qs, anns = [], []
    for k, (image_id, question, answers) in enumerate(rows):
        qid = 1000 * image_id + k
        qs.append({"image_id": image_id, "question": question, "question_id": qid})
        anns.append(
            {
                "question_id": qid,
                "image_id": image_id,
                "answer_type": "other",
                "question_type": "what",
                "multiple_choice_answer": answers[0],
                "answers": [
                    {"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(answers)
                ],
            }
        )
    d = Path(directory)
    return (
        write_json(d / f"v2_OpenEnded_mscoco_{subtype}_questions.json", {"data_subtype": subtype, "questions": qs}),
        write_json(d / f"v2_mscoco_{subtype}_annotations.json", {"data_subtype": subtype, "annotations": anns}),
    )


def write_gqa(path: str | Path, rows: Sequence[tuple[str, str, str, str]]) -> str:
    """Official ``*_balanced_questions.json``: ``rows`` = ``(question_id, imageId, question, answer)``."""
    data = {
        qid: {"imageId": img, "question": q, "answer": a, "fullAnswer": a, "types": {"structural": "query"}}
        for qid, img, q, a in rows
    }
    return write_json(path, data)


def write_snli_ve(path: str | Path, rows: Sequence[tuple[str, str, str]]) -> str:
    """Official ``snli_ve_<split>.jsonl``: ``rows`` = ``(Flickr30K_ID, hypothesis, gold_label)``."""
    return write_jsonl(
        path,
        [
            {"Flickr30K_ID": img, "sentence1": "a man.", "sentence2": hyp, "gold_label": gold,
             "pairID": f"{img}.jpg#{k}r1{gold[0]}"}
            for k, (img, hyp, gold) in enumerate(rows)
        ],
    )  # fmt: skip


def write_nlvr2(path: str | Path, rows: Sequence[tuple[str, str, bool]]) -> str:
    """Official NLVR2 ``{train,dev,test1}.json`` (JSON lines): ``rows`` = ``(identifier, sentence, label)``;
    the images are ``<split>-<set>-<pair>-img0/img1``."""
    return write_jsonl(
        path,
        [
            {"identifier": ident, "sentence": s, "label": "True" if label else "False", "left_url": "l",
             "right_url": "r", "synset": "dog", "query": "dogs 1"}
            for ident, s, label in rows
        ],
    )  # fmt: skip


def nlvr2_images(identifiers: Sequence[str]) -> list[str]:
    """Image ids of NLVR2 records (left, right for each identifier ``split-set-pair-sentence``)."""
    out = []
    for ident in identifiers:
        stem = ident.rsplit("-", 1)[0]
        out += [f"{stem}-img0", f"{stem}-img1"]
    return out


def write_vcr(path: str | Path, rows: Sequence[tuple[str, str, int, int]]) -> str:
    """Official VCR ``{train,val}.jsonl``: ``rows`` = ``(annot_id, img_fn, answer_label, rationale_label)``; the
    question, answers and rationales reference the objects by index."""
    out = []
    for annot_id, img_fn, a, r in rows:
        out.append(
            {
                "annot_id": annot_id,
                "img_id": annot_id,
                "img_fn": img_fn,
                "objects": ["person", "dog", "car"],
                "question": ["why", "is", [0], "sitting", "?"],
                "answer_choices": [["yes"], [[1], "is", "red"], [[0, 2], "are", "left"], ["no", "."]],
                "answer_label": a,
                "rationale_choices": [
                    ["it", "is", "red"],
                    [[2], "is", "blue"],
                    ["a", [1]],
                    ["there", "is", "a", "cat"],
                ],
                "rationale_label": r,
            }
        )
    return write_jsonl(path, out)


def write_refcoco(path: str | Path, rows: Sequence[tuple[int, int, str, Sequence[float], str]]) -> str:
    """RefCOCO+ JSON-lines export (``docs/data.md``): ``rows`` = ``(ref_id, image_id, sentence, bbox [x, y, w,
    h] pixels, split)``."""
    return write_jsonl(
        path,
        [
            {"ref_id": ref, "sent_id": 10 * ref, "ann_id": 100 + ref, "image_id": img, "sentence": s,
             "bbox": list(bbox), "split": split}
            for ref, img, s, bbox, split in rows
        ],
    )  # fmt: skip


def write_flickr30k(path: str | Path, images: Sequence[tuple[str, str, Sequence[str]]]) -> str:
    """Karpathy ``dataset_flickr30k.json``: ``images`` = ``(file stem, split, captions)``."""
    out, sent = [], 0
    for k, (stem, split, caps) in enumerate(images):
        sentences = []
        for c in caps:
            sentences.append({"raw": c, "tokens": c.lower().split(), "imgid": k, "sentid": sent})
            sent += 1
        out.append({"filename": f"{stem}.jpg", "imgid": k, "split": split, "sentids": [s["sentid"] for s in sentences],
                    "sentences": sentences})  # fmt: skip
    return write_json(path, {"dataset": "flickr30k", "images": out})


def write_coco_captions(path: str | Path, rows: Sequence[tuple[int, str]]) -> str:
    """Official COCO ``captions_<subtype>.json``: ``rows`` = ``(image_id, caption)``."""
    return write_json(
        path,
        {
            "info": {}, "licenses": [],
            "images": [{"id": i, "file_name": f"{i}.jpg"} for i in sorted({i for i, _ in rows})],
            "annotations": [{"image_id": i, "id": k, "caption": c} for k, (i, c) in enumerate(rows)],
        },
    )  # fmt: skip
