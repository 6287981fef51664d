"""easy-VQA images and their region features: a classical foreground detector stands in for Faster R-CNN.

Pixels whose colour differs from the median border colour by more than a threshold form the foreground
(:func:`foreground_mask`); its bounding box is the region. Each image gives two region tokens
(:func:`region_features`): the whole image, and the detected box's crop, both resized to ``region_size``
(optionally with the foreground mask as a 4th channel). Images are decoded and features computed once per process
(:func:`load_images`, :func:`load_region_features`); :class:`EasyVQARegions` serves them as an image source.

Example:
    >>> img = np.full((64, 64, 3), 255, dtype=np.uint8)
    >>> img[10:30, 20:40] = (200, 0, 0)
    >>> detect_foreground_box(img)
    (20, 10, 40, 30)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

#: Decoded images per split directory: ``{split: (image_ids, uint8 array [N, H, W, 3])}`` (decoded once).
_IMAGES: dict[str, tuple[list[int], np.ndarray]] = {}
#: Region features per ``(split, region_size, threshold, mask_background, mask_channel)``:
#: ``(image_ids, feat [N, 2, D], boxes [N, 2, 7])``.
_FEATURES: dict[tuple[str, int, float, bool, bool], tuple[list[int], torch.Tensor, torch.Tensor]] = {}

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
