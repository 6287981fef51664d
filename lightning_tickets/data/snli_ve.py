"""SNLI-VE from the official ``snli_ve_{train,dev,test}.jsonl`` (:class:`SNLIVEDataModule`): ``labels [B]``
(0 entailment, 1 neutral, 2 contradiction).

Example:
    >>> dm = SNLIVEDataModule(features="flickr30k_obj36.tsv", train_file="snli_ve_train.jsonl",
    ...                       val_file="snli_ve_dev.jsonl")  # doctest: +SKIP
"""

from __future__ import annotations

import logging

from torch.utils.data import Dataset

from lightning_tickets.data.base import FilesDataModule, TextImageDataset
from lightning_tickets.data.formats import read_snli_ve

log = logging.getLogger(__name__)

__all__ = ["SNLIVEDataModule"]


class SNLIVEDataModule(FilesDataModule):
    """SNLI-VE from the official ``snli_ve_{train,dev,test}.jsonl``: hypothesis + Flickr30k image -> ``labels``
    (0 entailment, 1 neutral, 2 contradiction).

    Args:
        train_file, val_file, test_file: the JSON-lines files (val = ``snli_ve_dev.jsonl``).
        **kwargs: see :class:`VLDataModule` (``image_key`` fields: ``image_id`` = ``Flickr30K_ID``, ``pair_id``).
    """

    num_labels = 3

    def build_dataset(self, split: str) -> Dataset:
        file = self.files[split] or ""
        recs = self.require_records(read_snli_ve(file), file)
        keys = self.image_keys(recs, file)
        self.verify_images(keys, file)
        extras = [{"labels": r["label"], "pair_id": r["pair_id"], "image_id": r["image_id"]} for r in recs]
        return TextImageDataset(self.encode([r["sentence"] for r in recs]), keys, self.image_source, extras)
