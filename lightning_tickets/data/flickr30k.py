"""Flickr30k image-text retrieval from the Karpathy-split ``dataset_flickr30k.json`` (:class:`Flickr30kDataModule`).

Training: ``itm_labels [B]`` (a caption with its image, or with random other images); validation/test: the full
caption x image cross product with ``txt_index`` / ``img_index``.

Example:
    >>> dm = Flickr30kDataModule(features="flickr30k_obj36.tsv",
    ...                          annotations="dataset_flickr30k.json")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from lightning_tickets.data.base import VLDataModule, _tensorize
from lightning_tickets.data.formats import read_flickr30k_karpathy

log = logging.getLogger(__name__)

__all__ = ["Flickr30kDataModule", "RetrievalEvalDataset", "RetrievalTrainDataset"]


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
        image_key: str = "{stem}",
        **kwargs: Any,
    ) -> None:
        super().__init__(features, image_key=image_key, **kwargs)
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
