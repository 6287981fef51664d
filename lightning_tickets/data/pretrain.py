"""Image-text pre-training data (UNITER's MLM + MRM + ITM) from caption files and an image source.

Caption files, one or more per split:

* COCO captions, official ``captions_{train,val}2014.json``: ``{"annotations": [{"image_id": 42, "id": 1,
  "caption": "A dog on a couch."}, ...]}`` (other top-level keys ignored);
* JSON lines (any other corpus: Visual Genome region descriptions, Conceptual Captions, SBU, ... exported once):
  one ``{"image_id": ..., "caption": ...}`` object per line (extra fields are kept for ``image_key``).

``image_key`` fields: the record's fields (``image_id``, ...) plus ``subtype`` (the last ``_``-separated part of
the file name: ``captions_train2014.json`` -> ``train2014``), so LXMERT/UNITER-style COCO feature ids are
``"COCO_{subtype}_{image_id:012d}"``.

Every example is a caption with its own image (``itm_labels`` 1) or, with probability ``itm_neg_prob``, another
image of the split (0; uniformly drawn, or -- given ``txt_facts``/``img_facts`` -- among the images the caption is
known to be false of, see :class:`PretrainDataset`); tokens are masked for MLM
(:func:`~lightning_tickets.data.pretrain_masking.mask_tokens`: ``mlm_labels``) and regions for MRM
(:func:`~lightning_tickets.data.pretrain_masking.mask_regions`: ``img_masked``; region sources only). Training
draws fresh randomness at every access; validation/test examples are fixed (a generator seeded from ``seed`` and
the index), so a validation score is reproducible. Batches (:class:`~lightning_tickets.data.collators.VLBatchCollator`)
feed :class:`~lightning_tickets.tasks.Pretraining`.

The easy-VQA variant (statements built from question-answer pairs, in-memory region features) is
:class:`lightning_tickets.data.easy_vqa.EasyVQAPretrainDataModule`.

Example (YAML: ``data.class_path: lightning_tickets.data.pretrain.PretrainDataModule``):
    >>> dm = PretrainDataModule(features="coco_butd.h5", train_files=["captions_train2014.json"],
    ...                         image_key="COCO_{subtype}_{image_id:012d}")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from lightning_tickets.data.base import VLDataModule, _as_list
from lightning_tickets.data.formats import FormatError, iter_jsonl, read_json, require
from lightning_tickets.data.pretrain_masking import mask_regions, mask_tokens

__all__ = ["PretrainDataModule", "PretrainDataset", "read_captions"]


def read_captions(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Caption records ``{"image_id", "caption", "subtype", ...}`` of a COCO captions JSON or a JSON-lines file.

    Example:
        >>> import json, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "captions_val2014.json")
        >>> _ = open(p, "w").write(json.dumps({"annotations": [{"image_id": 42, "id": 7, "caption": "A dog."}]}))
        >>> read_captions(p)
        [{'image_id': 42, 'id': 7, 'caption': 'A dog.', 'subtype': 'val2014'}]
    """
    subtype = Path(path).stem.split("_")[-1]
    if Path(path).suffix == ".json":
        data = read_json(path)
        rows = require(data, "annotations", path, "top level", list) if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise FormatError(path, "top level", "expected COCO captions ({'annotations': [...]}) or a JSON list")
        items = list(enumerate(rows))
        where = "record"
    else:
        items = list(iter_jsonl(path))
        where = "line"
    out = []
    for i, rec in items:
        here = f"{where} {i + (where == 'line')}"
        require(rec, "image_id", path, here, (str, int))
        require(rec, "caption", path, here, str)
        out.append({**rec, "subtype": rec.get("subtype", subtype)})
    return out


class PretrainDataset(Dataset):
    """Caption ``i`` with its image or a negative one, masked for MLM/MRM (see the module docstring).

    Args:
        input_ids: token ids of every caption.
        txt2img: caption -> index into ``image_keys``.
        image_keys: image ids of the split (distinct).
        source: image source.
        vocab_size, mask_token_id, special_token_ids: tokenizer facts for :func:`mask_tokens`.
        mlm_prob, mrm_prob, itm_neg_prob: masking / negative probabilities.
        seed: ``None`` = global torch RNG at every access (training); an int = a fixed example per index.
        txt_facts, img_facts: optional bit masks, one per caption / image, of the "worlds" (e.g. easy-VQA's 24
            colour-shape combinations) a caption is true of and an image may be. A negative image for caption
            ``i`` is then drawn among the images ``j`` with ``txt_facts[i] & img_facts[j] == 0`` (the caption is
            certainly false of them), so ITM negatives are not secretly positives; when no image qualifies, any
            other image is used. ``None``: negatives uniformly among the other images (UNITER).

    Example:
        >>> src = {"a": {"img_feat": torch.zeros(2, 4)}, "b": {"img_feat": torch.ones(2, 4)}}
        >>> ds = PretrainDataset([[101, 7, 102]], [0], ["a", "b"], src, 1000, 103, [101, 102], itm_neg_prob=1.0,
        ...                      seed=0, txt_facts=[0b01], img_facts=[0b01, 0b10])
        >>> int(ds[0]["itm_labels"]), int(ds[0]["img_index"])
        (0, 1)
    """

    def __init__(
        self,
        input_ids: list[list[int]],
        txt2img: list[int],
        image_keys: list[str],
        source: Any,
        vocab_size: int,
        mask_token_id: int,
        special_token_ids: Sequence[int],
        mlm_prob: float = 0.15,
        mrm_prob: float = 0.15,
        itm_neg_prob: float = 0.5,
        seed: int | None = None,
        txt_facts: Sequence[int] | None = None,
        img_facts: Sequence[int] | None = None,
    ) -> None:
        if (txt_facts is None) != (img_facts is None):
            raise ValueError("give both txt_facts and img_facts (or neither)")
        if txt_facts is not None and (len(txt_facts) != len(input_ids) or len(img_facts) != len(image_keys)):
            raise ValueError(
                f"txt_facts has {len(txt_facts)} entries for {len(input_ids)} captions and img_facts "
                f"{len(img_facts)} for {len(image_keys)} images; give one per caption / image"
            )
        self.txt_facts = None if txt_facts is None else [int(f) for f in txt_facts]
        self.img_facts = None if img_facts is None else torch.tensor([int(f) for f in img_facts], dtype=torch.long)
        self._negatives: dict[int, torch.Tensor] = {}
        self.input_ids = input_ids
        self.txt2img = txt2img
        self.image_keys = image_keys
        self.source = source
        self.vocab_size = vocab_size
        self.mask_token_id = mask_token_id
        self.special_token_ids = tuple(special_token_ids)
        self.mlm_prob = mlm_prob
        self.mrm_prob = mrm_prob
        self.itm_neg_prob = itm_neg_prob
        self.seed = seed

    def __len__(self) -> int:
        return len(self.input_ids)

    def negative_candidates(self, i: int) -> torch.Tensor | None:
        """Indices of the images caption ``i`` is known to be false of (``None`` without facts)."""
        if self.txt_facts is None or self.img_facts is None:
            return None
        facts = self.txt_facts[i]
        if facts not in self._negatives:
            self._negatives[facts] = ((self.img_facts & facts) == 0).nonzero().squeeze(1)
        return self._negatives[facts]

    def __getitem__(self, i: int) -> dict[str, Any]:
        g = None if self.seed is None else torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        pos, n_img = self.txt2img[i], len(self.image_keys)
        img, label = pos, 1
        if n_img > 1 and float(torch.rand((), generator=g)) < self.itm_neg_prob:
            candidates = self.negative_candidates(i)
            if candidates is not None and len(candidates):
                img = int(candidates[int(torch.randint(0, len(candidates), (), generator=g))])
            if img == pos:  # no facts, no known-false image, or (inconsistent facts) the positive itself
                other = int(torch.randint(0, n_img - 1, (), generator=g))
                img = other + (other >= pos)
            label = 0
        ids = torch.tensor(self.input_ids[i], dtype=torch.long)
        ex: dict[str, Any] = dict(self.source[self.image_keys[img]])
        ex["input_ids"], ex["mlm_labels"] = mask_tokens(
            ids, self.vocab_size, self.mask_token_id, self.special_token_ids, self.mlm_prob, generator=g
        )
        if "img_feat" in ex and self.mrm_prob > 0:
            ex["img_masked"] = mask_regions(int(ex["img_feat"].shape[0]), self.mrm_prob, g)
        ex["itm_labels"] = torch.tensor(label)
        ex["txt_index"], ex["img_index"] = torch.tensor(i), torch.tensor(img)
        return ex


class PretrainDataModule(VLDataModule):
    """Pre-training batches (``input_ids`` masked + ``mlm_labels``, ``itm_labels``, ``img_masked`` and the
    original ``img_feat``, ``img_soft_label`` when the features have it) for
    :class:`~lightning_tickets.tasks.Pretraining`.

    Args:
        features: image source(s), see :class:`VLDataModule` (several files: a list, searched in order).
        train_files, val_files, test_files: caption files (COCO captions JSON or JSON lines), one or a list.
        mlm_prob: token masking probability (UNITER: 0.15).
        mrm_prob: region masking probability (UNITER: 0.15).
        itm_neg_prob: probability of a mismatched image (UNITER: 0.5).
        seed: seed of the fixed validation/test masking.
        max_text_len: as :class:`VLDataModule`, default 60 tokens.
        **kwargs: see :class:`VLDataModule`.
    """

    def __init__(
        self,
        features: str | list[str],
        train_files: str | list[str] | None = None,
        val_files: str | list[str] | None = None,
        test_files: str | list[str] | None = None,
        mlm_prob: float = 0.15,
        mrm_prob: float = 0.15,
        itm_neg_prob: float = 0.5,
        seed: int = 0,
        max_text_len: int = 60,
        **kwargs: Any,
    ) -> None:
        super().__init__(features, max_text_len=max_text_len, **kwargs)
        for name, p in (("mlm_prob", mlm_prob), ("mrm_prob", mrm_prob), ("itm_neg_prob", itm_neg_prob)):
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"{name}={p!r} must be in [0, 1]")
        self.files = {"train": _as_list(train_files), "val": _as_list(val_files), "test": _as_list(test_files)}
        self.mlm_prob, self.mrm_prob, self.itm_neg_prob = float(mlm_prob), float(mrm_prob), float(itm_neg_prob)
        self.seed = int(seed)

    def split_file(self, split: str) -> str | None:
        return ", ".join(self.files[split]) or None

    def build_dataset(self, split: str) -> Dataset:
        files = self.files[split]
        keys: list[str] = []
        captions: list[str] = []
        for file in files:
            recs = read_captions(file)
            keys += self.image_keys(recs, file)
            captions += [r["caption"] for r in recs]
        self.require_records(captions, files, "captions")
        self.verify_images(keys, ", ".join(files))
        image_keys = list(dict.fromkeys(keys))
        index = {k: j for j, k in enumerate(image_keys)}
        return self.make_dataset(captions, [index[k] for k in keys], image_keys, self.image_source, split)

    def make_dataset(
        self,
        captions: Sequence[str],
        txt2img: Sequence[int],
        image_keys: Sequence[str],
        source: Any,
        split: str,
        txt_facts: Sequence[int] | None = None,
        img_facts: Sequence[int] | None = None,
    ) -> PretrainDataset:
        """A :class:`PretrainDataset` of ``captions`` (tokenised here) over ``source``; training examples draw
        fresh masks/negatives at every access, validation/test ones are fixed by ``seed``."""
        tok = self.tokenizer
        mask_id = tok.token_to_id("[MASK]")
        if mask_id is None:
            raise ValueError(f"tokenizer {self.tokenizer_path!r} has no [MASK] token (needed for MLM)")
        names = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
        specials = [t for t in (tok.token_to_id(s) for s in names) if t is not None]
        return PretrainDataset(
            self.encode(captions), list(txt2img), list(image_keys), source, tok.get_vocab_size(), int(mask_id),
            specials, self.mlm_prob, self.mrm_prob, self.itm_neg_prob, seed=None if split == "train" else self.seed,
            txt_facts=txt_facts, img_facts=img_facts,
        )  # fmt: skip
