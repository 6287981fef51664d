"""easy-VQA (PyPI ``easy-vqa``): a small real VQA dataset for CPU demos of lottery-ticket search.

4,000 train / 1,000 test 64x64 images of one coloured shape, 38,575 / 9,673 questions, 13 answers. The data are
read from the *installed* ``easy_vqa`` package (no download). Images are decoded once per process and cached.

Visual input for region-based backbones (UNITER): the UNITER recipe feeds detector regions (features + boxes).
Here a classical foreground detector stands in for Faster R-CNN: pixels whose colour differs from the median
border colour by more than ``detector_threshold`` (RGB in ``[0, 1]``, absolute differences summed over channels)
form the foreground; its bounding box is the region. Each image gives two regions:

1. the whole image resized to ``region_size x region_size`` with box ``[0, 0, 1, 1, 1, 1, 1]``;
2. the detected box's crop resized to ``region_size x region_size`` with box ``[x1, y1, x2, y2, w, h, w*h]``
   (normalised; the whole image when nothing is detected).

Features are the resized RGB crops flattened channel-first (``img_dim = 3 * region_size**2`` = 768 for 16); with
``mask_channel=True`` the detector's foreground mask, resized the same way, is appended as a 4th channel
(``img_dim = 4 * region_size**2`` = 1024), as a mask-predicting detector would provide it.
The detector never sees questions or answers. See ``docs/easy_vqa.md`` for why this input was chosen.

Question types (:func:`question_type`, ``EasyVQADataModule(question_types=[...])``): ``"color"`` ("what color is
the shape?", 8 colour answers), ``"shape"`` ("what shape is in the image?", 3 shape answers) and ``"yesno"`` ("is
there a red shape?", yes/no); the three sub-tasks share the 13-answer space. :class:`EasyVQAPretrainDataModule`
turns question-answer pairs into statements ("the shape is blue") for ITM + MLM + MRFR pre-training
(:class:`~lightning_tickets.tasks.Pretraining`).

The package: :mod:`~lightning_tickets.data.easy_vqa.questions` (question types, statements),
:mod:`~lightning_tickets.data.easy_vqa.images` (detector and region features),
:mod:`~lightning_tickets.data.easy_vqa.vqa` (:class:`EasyVQADataModule`) and
:mod:`~lightning_tickets.data.easy_vqa.pretrain` (:class:`EasyVQAPretrainDataModule`).

Example:
    >>> import numpy as np
    >>> img = np.full((64, 64, 3), 255, dtype=np.uint8)
    >>> img[10:30, 20:40] = (200, 0, 0)
    >>> detect_foreground_box(img)
    (20, 10, 40, 30)
"""

from lightning_tickets.data.easy_vqa.images import (
    WHOLE_IMAGE_BOX,
    EasyVQARegions,
    _easy_vqa,
    _feature_dim,
    detect_foreground_box,
    foreground_mask,
    load_images,
    load_region_features,
    region_features,
)
from lightning_tickets.data.easy_vqa.pretrain import EasyVQAPretrainDataModule
from lightning_tickets.data.easy_vqa.questions import (
    ALL_COMBOS,
    COLORS,
    QUESTION_TYPES,
    SHAPES,
    TYPE_ANSWERS,
    _combos,
    check_question_types,
    image_combos,
    question_statement,
    question_type,
)
from lightning_tickets.data.easy_vqa.vqa import EasyVQADataModule, VQARegionDataset, split_train_images

__all__ = [
    "ALL_COMBOS",
    "COLORS",
    "QUESTION_TYPES",
    "SHAPES",
    "TYPE_ANSWERS",
    "WHOLE_IMAGE_BOX",
    "EasyVQADataModule",
    "EasyVQAPretrainDataModule",
    "EasyVQARegions",
    "VQARegionDataset",
    "_combos",
    "_easy_vqa",
    "_feature_dim",
    "check_question_types",
    "detect_foreground_box",
    "foreground_mask",
    "image_combos",
    "load_images",
    "load_region_features",
    "question_statement",
    "question_type",
    "region_features",
    "split_train_images",
]
