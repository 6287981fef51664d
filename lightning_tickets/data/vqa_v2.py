"""VQA v2 from the official questions/annotations JSON files (:class:`VQAv2DataModule`).

Batches: ``input_ids``, ``attention_mask``, the image keys, ``targets [B, num_answers]`` (soft scores),
``question_id``, ``image_id``.

Example:
    >>> dm = VQAv2DataModule(features="coco_butd.h5", train_questions="v2_OpenEnded_mscoco_train2014_questions.json",
    ...                      train_annotations="v2_mscoco_train2014_annotations.json")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset

from lightning_tickets.data.base import TextImageDataset, VLDataModule, _as_list, read_vocab
from lightning_tickets.data.collators import VLBatchCollator
from lightning_tickets.data.formats import read_vqa_v2
from lightning_tickets.data.formats.vqa_v2 import answer_targets, build_answer_vocab

log = logging.getLogger(__name__)

__all__ = ["VQAv2DataModule"]


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
        **kwargs: Any,
    ) -> None:
        super().__init__(features, **kwargs)
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
                self._answers = read_vocab(self.answer_vocab)
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
