"""RefCOCO+ (or RefCOCO / RefCOCOg) from the documented JSON-lines export (:class:`RefCOCODataModule`):
``labels [B]`` (the region of highest IoU with the ground truth) and ``target_box [B, 4]``.

Example:
    >>> boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]])
    >>> box_iou(boxes, torch.tensor([0.0, 0.0, 2.0, 2.0]))
    tensor([1.0000, 0.1429])
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import Dataset

from lightning_tickets.data.base import FilesDataModule, TextImageDataset, _has_pixel_images, _tensorize
from lightning_tickets.data.formats import read_refcoco_jsonl

log = logging.getLogger(__name__)

__all__ = ["RefCOCODataModule", "RefExpDataset", "box_iou"]


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


class RefCOCODataModule(FilesDataModule):
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
        **kwargs: Any,
    ) -> None:
        # region features only (pixel sources are refused): ViLT's image_size / max_size are not settings here
        super().__init__(features, train_file, val_file, test_file, image_size=384, max_size=640, **kwargs)
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
