"""Image sources: look up the image side of an example by image id (see ``docs/dev/batch-contract.md``).

* :class:`HDF5Features` -- pre-extracted detector regions in our documented HDF5 layout (one group per image);
* :class:`TSVFeatures` -- bottom-up-attention TSV (base64 fields), as LXMERT reads it;
* :class:`ImageFolder` -- raw images with ViLT's preprocessing (``pixel_values``);
* :class:`MultiSource` -- several sources searched in order (e.g. COCO ``train2014`` + ``val2014`` files).

Region sources return ``img_feat [R, D]`` (float32) and ``img_pos_feat [R, 7]`` = normalised
``[x1, y1, x2, y2, w, h, w*h]`` (clipped to ``[0, 1]``; computed once per image and cached), plus
``img_soft_label [R, C]`` when the file has detector class distributions. :func:`open_image_source` picks the
source from a path (``.h5``/``.hdf5``, ``.tsv``, or a directory). Files are opened lazily in each process, so
sources can be sent to DataLoader workers.

Example:
    >>> import numpy as np
    >>> normalized_boxes(np.array([[0, 0, 50, 20]]), image_w=100, image_h=40).tolist()
    [[0.0, 0.0, 0.5, 0.5, 0.5, 0.5, 0.25]]
"""

from __future__ import annotations

import base64
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: Column names of a bottom-up-attention TSV line, as in LXMERT's ``src/utils.py`` (``FIELDNAMES``).
TSV_FIELDNAMES = (
    "img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id", "attrs_conf", "num_boxes", "boxes",
    "features",
)  # fmt: skip
#: Image file extensions tried by :class:`ImageFolder` when an id has none.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPEG", ".JPG", ".PNG", ".webp", ".bmp")


def normalized_boxes(boxes: np.ndarray, image_w: float, image_h: float) -> torch.Tensor:
    """Pixel boxes ``[R, 4]`` (x1, y1, x2, y2) -> ``[R, 7]`` float32 ``[x1, y1, x2, y2, w, h, w*h]`` in ``[0, 1]``.

    Example:
        >>> normalized_boxes(np.array([[10.0, 0.0, 30.0, 10.0]]), 20, 10)[0].tolist()  # x2 clipped to the image
        [0.5, 0.0, 1.0, 1.0, 0.5, 1.0, 0.5]
    """
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if image_w <= 0 or image_h <= 0:
        raise ValueError(f"image size must be positive, got w={image_w} h={image_h}")
    xyxy = np.clip(b / np.array([image_w, image_h, image_w, image_h], dtype=np.float32), 0.0, 1.0)
    w = xyxy[:, 2] - xyxy[:, 0]
    h = xyxy[:, 3] - xyxy[:, 1]
    return torch.from_numpy(np.concatenate([xyxy, w[:, None], h[:, None], (w * h)[:, None]], axis=1))


class RegionSource:
    """Base of detector-region sources: caching, dimension checks, the returned dict.

    Subclasses implement :meth:`_read` (``features [R, D]``, pixel ``boxes [R, 4]``, ``image_w``, ``image_h``,
    optional ``soft_labels [R, C]``) and :meth:`keys`.

    Args:
        path: the feature file.
        img_dim: expected feature dimension ``D`` (2048 for bottom-up-attention); ``None`` = no check.
        cache_size: number of images whose features are kept in memory (LRU; the 7-d boxes of every image read
            are kept regardless, they are small).
    """

    def __init__(self, path: str | os.PathLike[str], img_dim: int | None = None, cache_size: int = 1024) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(f"image features {os.fspath(path)!r} do not exist")
        self.img_dim = img_dim
        self.cache_size = cache_size
        self._cache: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._pos: dict[str, torch.Tensor] = {}
        self._sizes: dict[str, tuple[float, float]] = {}

    # -- to implement
    def _read(self, key: str) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def keys(self) -> list[str]:  # pragma: no cover - abstract
        """All image ids in the file."""
        raise NotImplementedError

    # -- common
    def _missing(self, key: str) -> KeyError:
        return KeyError(f"image id {key!r} is not in {self.path}")

    def __contains__(self, image_id: object) -> bool:
        return self._has(str(image_id))

    def _has(self, key: str) -> bool:
        return key in set(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def image_wh(self, image_id: str | int) -> tuple[float, float]:
        """``(width, height)`` of the image in pixels (as recorded in the feature file)."""
        key = str(image_id)
        if key not in self._sizes:
            self[key]
        return self._sizes[key]

    def __getitem__(self, image_id: str | int) -> dict[str, torch.Tensor]:
        """``{"img_feat": [R, D], "img_pos_feat": [R, 7]}`` (+ ``"img_soft_label": [R, C]``).

        Raises:
            KeyError: the image id is not in the file (the message names both).
            ValueError: the feature dimension differs from ``img_dim``, or the arrays are inconsistent.
        """
        key = str(image_id)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return dict(hit)
        raw = self._read(key)
        feat = np.asarray(raw["features"], dtype=np.float32)
        boxes = np.asarray(raw["boxes"], dtype=np.float32)
        if feat.ndim != 2:
            raise ValueError(f"{self.path}: image {key!r}: features should be [R, D], got shape {feat.shape}")
        if self.img_dim is not None and feat.shape[1] != self.img_dim:
            raise ValueError(
                f"{self.path}: image {key!r}: feature dimension {feat.shape[1]} != expected img_dim {self.img_dim}"
            )
        if boxes.shape != (feat.shape[0], 4):
            raise ValueError(
                f"{self.path}: image {key!r}: boxes should be [{feat.shape[0]}, 4] to match {feat.shape[0]} "
                f"regions, got shape {boxes.shape}"
            )
        if key not in self._pos:
            self._sizes[key] = (float(raw["image_w"]), float(raw["image_h"]))
            self._pos[key] = normalized_boxes(boxes, raw["image_w"], raw["image_h"])
        out = {"img_feat": torch.from_numpy(np.ascontiguousarray(feat)), "img_pos_feat": self._pos[key]}
        soft = raw.get("soft_labels")
        if soft is not None:
            soft = np.asarray(soft, dtype=np.float32)
            if soft.ndim != 2 or soft.shape[0] != feat.shape[0]:
                raise ValueError(f"{self.path}: image {key!r}: soft_labels should be [R, C], got {soft.shape}")
            out["img_soft_label"] = torch.from_numpy(np.ascontiguousarray(soft))
        if self.cache_size > 0:
            self._cache[key] = out
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return dict(out)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        for k in self._unpicklable:
            state[k] = None
        return state

    _unpicklable: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({os.fspath(self.path)!r}, img_dim={self.img_dim})"


class HDF5Features(RegionSource):
    """Regions stored in HDF5 (needs ``h5py``), one group per image id::

        /<image_id>/features      [R, D] float16/float32
        /<image_id>/boxes         [R, 4] float, pixels x1, y1, x2, y2
        /<image_id>/soft_labels   [R, C] float (optional: detector class distribution, for MRC)
        /<image_id>.attrs["image_w"], .attrs["image_h"]   image size in pixels

    Example:
        >>> src = HDF5Features("coco_butd.h5", img_dim=2048)  # doctest: +SKIP
        >>> src["458752"]["img_feat"].shape  # doctest: +SKIP
        torch.Size([36, 2048])
    """

    _unpicklable = ("_file", "_pid")

    def __init__(self, path: str | os.PathLike[str], img_dim: int | None = None, cache_size: int = 1024) -> None:
        super().__init__(path, img_dim, cache_size)
        self._file: Any = None
        self._pid: int | None = None

    @property
    def file(self) -> Any:
        if self._file is None or self._pid != os.getpid():
            try:
                import h5py
            except ImportError as err:
                raise ImportError("HDF5Features needs h5py: pip install h5py (or the 'data' extra)") from err
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def keys(self) -> list[str]:
        """Ids of all groups holding a ``features`` dataset (nested ids such as ``"movie/a.jpg"`` included)."""
        found: list[str] = []

        def visit(name: str, obj: Any) -> None:
            if hasattr(obj, "keys") and "features" in obj:
                found.append(name)

        self.file.visititems(visit)
        return found

    def _has(self, key: str) -> bool:
        return key in self.file

    def _read(self, key: str) -> dict[str, Any]:
        if key not in self.file:
            raise self._missing(key)
        group = self.file[key]
        for name in ("features", "boxes"):
            if name not in group:
                raise ValueError(f"{self.path}: image {key!r}: no dataset {name!r} (has {', '.join(group)})")
        for name in ("image_w", "image_h"):
            if name not in group.attrs:
                raise ValueError(f"{self.path}: image {key!r}: no attribute {name!r}")
        return {
            "features": group["features"][()],
            "boxes": group["boxes"][()],
            "image_w": float(group.attrs["image_w"]),
            "image_h": float(group.attrs["image_h"]),
            "soft_labels": group["soft_labels"][()] if "soft_labels" in group else None,
        }


class TSVFeatures(RegionSource):
    """Bottom-up-attention TSV, as used by LXMERT (``*_obj36.tsv``): one tab-separated line per image with the
    fields :data:`TSV_FIELDNAMES`; ``objects_id``/``attrs_id`` int64, ``objects_conf``/``attrs_conf`` float32,
    ``boxes`` float32 ``[num_boxes, 4]`` (pixels x1 y1 x2 y2) and ``features`` float32 ``[num_boxes, D]``, all
    base64-encoded raw buffers.

    The file is scanned once (byte offset of every line, by ``img_id``) and lines are read on demand, so the
    file is not loaded into memory.

    Example:
        >>> src = TSVFeatures("mscoco_imgfeat/val2014_obj36.tsv", img_dim=2048)  # doctest: +SKIP
        >>> src["COCO_val2014_000000000042"]["img_pos_feat"].shape  # doctest: +SKIP
        torch.Size([36, 7])
    """

    _unpicklable = ("_fh", "_pid")

    def __init__(self, path: str | os.PathLike[str], img_dim: int | None = None, cache_size: int = 1024) -> None:
        super().__init__(path, img_dim, cache_size)
        self._offsets: dict[str, int] | None = None
        self._fh: Any = None
        self._pid: int | None = None

    def _index(self) -> dict[str, int]:
        if self._offsets is None:
            offsets: dict[str, int] = {}
            pos = 0
            with self.path.open("rb") as f:
                for line in f:
                    if line.strip():
                        offsets[line.split(b"\t", 1)[0].decode("utf-8")] = pos
                    pos += len(line)
            self._offsets = offsets
        return self._offsets

    def keys(self) -> list[str]:
        return list(self._index())

    def _has(self, key: str) -> bool:
        return key in self._index()

    def _handle(self) -> Any:
        if self._fh is None or self._pid != os.getpid():
            self._fh = self.path.open("rb")
            self._pid = os.getpid()
        return self._fh

    def _read(self, key: str) -> dict[str, Any]:
        offsets = self._index()
        if key not in offsets:
            raise self._missing(key)
        fh = self._handle()
        fh.seek(offsets[key])
        fields = fh.readline().rstrip(b"\r\n").split(b"\t")
        if len(fields) != len(TSV_FIELDNAMES):
            raise ValueError(
                f"{self.path}: image {key!r}: {len(fields)} tab-separated fields, expected {len(TSV_FIELDNAMES)} "
                f"({', '.join(TSV_FIELDNAMES)})"
            )
        item = dict(zip(TSV_FIELDNAMES, fields))
        try:
            n = int(item["num_boxes"])
            boxes = np.frombuffer(base64.b64decode(item["boxes"]), dtype=np.float32).reshape(n, 4).copy()
            features = np.frombuffer(base64.b64decode(item["features"]), dtype=np.float32).reshape(n, -1).copy()
            image_w, image_h = float(item["img_w"]), float(item["img_h"])
        except (ValueError, TypeError) as err:
            raise ValueError(f"{self.path}: image {key!r}: malformed line ({err})") from err
        return {"features": features, "boxes": boxes, "image_w": image_w, "image_h": image_h}


def vilt_resize_shape(width: int, height: int, shorter: int = 384, longer: int = 640) -> tuple[int, int]:
    """ViLT's ``MinMaxResize``: ``(new_w, new_h)`` with the shorter side ``shorter``, the longer side at most
    ``longer``, both rounded down to multiples of 32.

    Example:
        >>> vilt_resize_shape(640, 480), vilt_resize_shape(1000, 200), vilt_resize_shape(300, 300)
        ((512, 384), (640, 128), (384, 384))
    """
    scale = shorter / min(width, height)
    if height < width:
        new_h, new_w = float(shorter), scale * width
    else:
        new_h, new_w = scale * height, float(shorter)
    if max(new_h, new_w) > longer:
        scale = longer / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    new_h, new_w = int(new_h + 0.5) // 32 * 32, int(new_w + 0.5) // 32 * 32
    return max(new_w, 32), max(new_h, 32)


class ImageFolder:
    """Raw images under ``root`` with ViLT's preprocessing: RGB, bicubic resize (:func:`vilt_resize_shape`),
    ``[0, 1]`` then mean 0.5 / std 0.5 -> ``{"pixel_values": [3, H, W]}`` (padding and ``pixel_mask`` are added by
    the collator).

    An image id is looked up as ``root/<id>``, then ``root/<id><ext>`` for :data:`IMAGE_EXTENSIONS`, then by file
    name (with or without extension) anywhere below ``root`` (one recursive scan, e.g. NLVR2's ``train/<n>/``).

    Example:
        >>> src = ImageFolder("flickr30k-images")  # doctest: +SKIP
        >>> src["1000092795"]["pixel_values"].shape  # 500x333 image  # doctest: +SKIP
        torch.Size([3, 384, 576])
    """

    def __init__(self, root: str | os.PathLike[str], image_size: int = 384, max_size: int = 640) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {os.fspath(root)!r} does not exist")
        if image_size < 32 or max_size < image_size:
            raise ValueError(f"need 32 <= image_size <= max_size, got {image_size}, {max_size}")
        self.image_size = image_size
        self.max_size = max_size
        self._names: dict[str, Path] | None = None

    def __repr__(self) -> str:
        return f"ImageFolder({os.fspath(self.root)!r}, image_size={self.image_size}, max_size={self.max_size})"

    def _scan(self) -> dict[str, Path]:
        if self._names is None:
            names: dict[str, Path] = {}
            for p in sorted(self.root.rglob("*")):
                if p.is_file() and p.suffix in IMAGE_EXTENSIONS:
                    names.setdefault(p.name, p)
                    names.setdefault(p.stem, p)
            self._names = names
        return self._names

    def find(self, image_id: str | int) -> Path:
        """Path of the image file of ``image_id``.

        Raises:
            KeyError: no such image below ``root`` (the message names the folder and the id).
        """
        key = str(image_id)
        direct = self.root / key
        if direct.is_file():
            return direct
        for ext in IMAGE_EXTENSIONS:
            p = self.root / f"{key}{ext}"
            if p.is_file():
                return p
        found = self._scan().get(Path(key).name)
        if found is None:
            raise KeyError(f"image id {key!r} is not in {self.root} (no file {key}[.jpg|.png|...] below it)")
        return found

    def __contains__(self, image_id: object) -> bool:
        try:
            self.find(str(image_id))
        except KeyError:
            return False
        return True

    def keys(self) -> list[str]:
        """Stems of all image files below ``root``."""
        return sorted({p.stem for p in self._scan().values()})

    def image_wh(self, image_id: str | int) -> tuple[float, float]:
        """``(width, height)`` of the original image in pixels."""
        from PIL import Image

        with Image.open(self.find(image_id)) as img:
            return float(img.width), float(img.height)

    def __getitem__(self, image_id: str | int) -> dict[str, torch.Tensor]:
        """``{"pixel_values": [3, H, W]}`` float32 (ViLT normalisation)."""
        try:
            from PIL import Image
        except ImportError as err:
            raise ImportError("ImageFolder needs Pillow: pip install pillow") from err
        path = self.find(image_id)
        with Image.open(path) as img:
            rgb = img.convert("RGB")
        new_w, new_h = vilt_resize_shape(rgb.width, rgb.height, self.image_size, self.max_size)
        rgb = rgb.resize((new_w, new_h), resample=Image.BICUBIC)
        arr = np.asarray(rgb, dtype=np.float32) / 255.0
        pixels = torch.from_numpy((arr - 0.5) / 0.5).permute(2, 0, 1).contiguous()
        return {"pixel_values": pixels}


class MultiSource:
    """Several image sources searched in order (first one holding the id wins).

    Example:
        >>> src = MultiSource([TSVFeatures("train2014_obj36.tsv"), TSVFeatures("val2014_obj36.tsv")])  # doctest: +SKIP
    """

    def __init__(self, sources: Sequence[Any]) -> None:
        if not sources:
            raise ValueError("MultiSource needs at least one source")
        self.sources = list(sources)

    def __repr__(self) -> str:
        return f"MultiSource({self.sources!r})"

    def _owner(self, image_id: str | int) -> Any:
        for src in self.sources:
            if image_id in src:
                return src
        names = ", ".join(os.fspath(getattr(s, "path", getattr(s, "root", s))) for s in self.sources)
        raise KeyError(f"image id {str(image_id)!r} is in none of {names}")

    def __contains__(self, image_id: object) -> bool:
        return any(image_id in s for s in self.sources)

    def keys(self) -> list[str]:
        return [k for s in self.sources for k in s.keys()]

    def image_wh(self, image_id: str | int) -> tuple[float, float]:
        return self._owner(image_id).image_wh(image_id)

    def __getitem__(self, image_id: str | int) -> dict[str, torch.Tensor]:
        return self._owner(image_id)[image_id]


def open_image_source(
    spec: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    img_dim: int | None = None,
    image_size: int = 384,
    max_size: int = 640,
    cache_size: int = 1024,
) -> Any:
    """Image source from a path: ``.h5``/``.hdf5`` -> :class:`HDF5Features`, ``.tsv`` -> :class:`TSVFeatures`,
    a directory -> :class:`ImageFolder`; a list of paths -> :class:`MultiSource`.

    Example:
        >>> open_image_source(".")
        ImageFolder('.', image_size=384, max_size=640)
    """
    if not isinstance(spec, (str, os.PathLike)):
        specs = list(spec)
        if len(specs) == 1:
            return open_image_source(specs[0], img_dim, image_size, max_size, cache_size)
        return MultiSource([open_image_source(s, img_dim, image_size, max_size, cache_size) for s in specs])
    p = Path(spec).expanduser()
    suffix = p.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return HDF5Features(p, img_dim=img_dim, cache_size=cache_size)
    if suffix == ".tsv":
        return TSVFeatures(p, img_dim=img_dim, cache_size=cache_size)
    if p.is_dir():
        return ImageFolder(p, image_size=image_size, max_size=max_size)
    if not p.exists():
        raise FileNotFoundError(f"image source {os.fspath(spec)!r} does not exist")
    raise ValueError(
        f"image source {os.fspath(spec)!r}: expected a .h5/.hdf5 or .tsv feature file, or an image directory"
    )
