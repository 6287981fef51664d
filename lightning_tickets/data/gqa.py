"""GQA from the official balanced questions JSON files (:class:`GQADataModule`): ``labels [B]`` over the answer
vocabulary (-1 = an answer outside it, only outside training).

Example:
    >>> dm = GQADataModule(features="vg_gqa_obj36.h5", train_file="train_balanced_questions.json",
    ...                    val_file="testdev_balanced_questions.json")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any

from torch.utils.data import Dataset

from lightning_tickets.data.base import FilesDataModule, TextImageDataset, read_vocab
from lightning_tickets.data.formats import FormatError, read_gqa
from lightning_tickets.data.formats.gqa import build_gqa_vocab

log = logging.getLogger(__name__)

__all__ = ["GQADataModule"]


class GQADataModule(FilesDataModule):
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
        **kwargs: Any,
    ) -> None:
        super().__init__(features, train_file, val_file, test_file, **kwargs)
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
                self._answers = read_vocab(self.answer_vocab)
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
