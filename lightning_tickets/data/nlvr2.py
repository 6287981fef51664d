"""NLVR2 from the official JSON-lines files (:class:`NLVR2DataModule`): a sentence and two images per record;
batches (:class:`~lightning_tickets.data.collators.PairCollator`) hold 2B rows (left images, then right images)
and ``labels [B]``.

Example:
    >>> dm = NLVR2DataModule(features="nlvr2_obj36.h5", train_file="train.json", val_file="dev.json")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset

from lightning_tickets.data.base import FilesDataModule
from lightning_tickets.data.collators import PairCollator
from lightning_tickets.data.formats import read_nlvr2

log = logging.getLogger(__name__)

__all__ = ["NLVR2DataModule", "PairDataset"]


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


class NLVR2DataModule(FilesDataModule):
    """NLVR2 from the official JSON-lines files: each record is a sentence and two images
    (``{split}-{set}-{pair}-img0/img1``); batches (:class:`~lightning_tickets.data.collators.PairCollator`) hold
    2B rows (left images, then right images) and ``labels [B]`` (1 = True), ``identifier``.

    Args:
        train_file, val_file, test_file: ``train.json``, ``dev.json``, ``test1.json``.
        **kwargs: see :class:`VLDataModule` (``image_key`` fields: ``image_id`` = ``dev-850-0-img0``,
            ``identifier``, ``side`` (0 left, 1 right)).
    """

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
