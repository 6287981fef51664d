"""Flickr30k retrieval: Karpathy-split JSON ``dataset_flickr30k.json``.

``{"dataset": "flickr30k", "images": [{"filename": "1000092795.jpg", "imgid": 0, "split": "train",
"sentids": [...], "sentences": [{"raw": "Two young guys ...", "tokens": [...], "imgid": 0, "sentid": 0}]}]}``;
splits ``train`` (29,000 images), ``val`` (1,014), ``test`` (1,000), 5 captions per image.

Example:
    >>> import json, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "f.json")
    >>> _ = open(p, "w").write(json.dumps({"images": [{"filename": "1.jpg", "imgid": 0, "split": "test",
    ...                                                "sentences": [{"raw": "A dog."}]}]}))
    >>> read_flickr30k_karpathy(p, "test")
    [{'filename': '1.jpg', 'stem': '1', 'imgid': 0, 'split': 'test', 'captions': ['A dog.']}]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from lightning_tickets.data.formats import FormatError, read_json, require


def read_flickr30k_karpathy(
    path: str | os.PathLike[str], split: str | Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """One record per image of ``split`` (a name, several names, or ``None`` for all): ``filename``, ``stem``
    (file name without extension), ``imgid``, ``split``, ``captions`` (the ``raw`` sentences)."""
    data = read_json(path)
    images = require(data, "images", path, "top level", list)
    wanted = {split} if isinstance(split, str) else (set(split) if split is not None else None)
    records = []
    for i, img in enumerate(images):
        name = img.get("filename") if isinstance(img, dict) else None
        where = f"image {i}" + (f" ({name})" if name else "")
        filename = require(img, "filename", path, where, str)
        img_split = require(img, "split", path, where, str)
        sentences = require(img, "sentences", path, where, list)
        if not sentences:
            raise FormatError(path, where, "no sentences")
        captions = [require(s, "raw", path, f"{where} sentence {j}", str) for j, s in enumerate(sentences)]
        if wanted is not None and img_split not in wanted:
            continue
        records.append(
            {
                "filename": filename,
                "stem": os.path.splitext(filename)[0],
                "imgid": img.get("imgid", i),
                "split": img_split,
                "captions": captions,
            }
        )
    return records
