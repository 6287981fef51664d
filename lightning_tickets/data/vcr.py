"""VCR from the official JSON-lines files (:class:`VCRDataModule`): Q->A and QA->R multiple-choice batches
(:class:`~lightning_tickets.data.collators.MultipleChoiceCollator`).

Example:
    >>> dm = VCRDataModule(features="vcr_obj36.h5", train_file="train.jsonl", val_file="val.jsonl")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from lightning_tickets.data.base import FilesDataModule
from lightning_tickets.data.collators import MultipleChoiceCollator
from lightning_tickets.data.formats import FormatError, read_vcr

log = logging.getLogger(__name__)

__all__ = ["MultipleChoiceDataset", "VCRDataModule"]


@dataclass(eq=False)
class MultipleChoiceDataset(Dataset):
    """VCR: ``{"qa": [4 examples], "qar": [4 examples], "answer_label", "rationale_label", "annot_id"}``.

    ``qa[i]``: ``[CLS] question [SEP] answer_i [SEP]``; ``qar[j]``: ``[CLS] question answer* [SEP] rationale_j
    [SEP]`` with the gold answer ``answer*``; both with ``token_type_ids`` (0 / 1) and the image.
    """

    qa: list[list[tuple[list[int], list[int]]]]
    qar: list[list[tuple[list[int], list[int]]]]
    image_keys: list[str]
    source: Any
    answer_labels: list[int]
    rationale_labels: list[int]
    annot_ids: list[str]

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


class VCRDataModule(FilesDataModule):
    """VCR from the official JSON-lines files; object references become object names (``"person"``).

    Each record yields 4 Q->A examples (``[CLS] question [SEP] answer_i [SEP]``) and 4 QA->R examples
    (``[CLS] question gold-answer [SEP] rationale_j [SEP]``), with ``token_type_ids``; batches
    (:class:`~lightning_tickets.data.collators.MultipleChoiceCollator`) are ``{"qa", "qar", "answer_label",
    "rationale_label", "num_choices", "annot_id"}``. Files without labels (``test.jsonl``) cannot build QA->R
    examples and are rejected.

    Args:
        train_file, val_file, test_file: ``train.jsonl``, ``val.jsonl`` (VCR is usually reported on val).
        max_text_len, batch_size: as :class:`VLDataModule`, with VCR's defaults (80 tokens, 8 questions).
        image_key: default ``"{img_fn}"`` (fields: ``img_fn``, ``img_id``, ``annot_id``).
        **kwargs: see :class:`VLDataModule`.
    """

    def __init__(
        self,
        features: str | list[str],
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        max_text_len: int = 80,
        batch_size: int = 8,
        image_key: str = "{img_fn}",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            features, train_file, val_file, test_file, max_text_len=max_text_len, batch_size=batch_size,
            image_key=image_key, **kwargs,
        )  # fmt: skip

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
