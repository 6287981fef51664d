"""RefCOCO+ (and RefCOCO/RefCOCOg): a documented JSON-lines export of the ``refer`` toolkit's data.

The original annotations are a Python pickle (``refs(unc).p``) plus COCO ``instances.json``; pickles are not a
safe or stable interchange format, so lightning-tickets reads one JSON object per referring sentence:
``{"ref_id", "image_id", "sentence", "bbox": [x, y, w, h] (pixels, COCO convention), "split"}`` (optional:
``"sent_id"``, ``"ann_id"``). ``docs/data.md`` has the 10-line export script.

Example:
    >>> import json, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "r.jsonl")
    >>> _ = open(p, "w").write(json.dumps({"ref_id": 1, "image_id": 9, "sentence": "left man",
    ...                                    "bbox": [10, 20, 30, 40], "split": "testA"}))
    >>> read_refcoco_jsonl(p, split="testA")[0]["bbox"], read_refcoco_jsonl(p, split="val")
    ([10.0, 20.0, 30.0, 40.0], [])
"""

from __future__ import annotations

import os
from typing import Any

from lightning_tickets.data.formats import FormatError, iter_jsonl, require


def read_refcoco_jsonl(path: str | os.PathLike[str], split: str | None = None) -> list[dict[str, Any]]:
    """Records ``ref_id``, ``sent_id``, ``image_id``, ``sentence``, ``bbox`` (floats, x y w h), ``split``; only
    those of ``split`` when given."""
    records = []
    for i, rec in iter_jsonl(path):
        ident = rec.get("ref_id")
        where = f"line {i + 1}" + (f" (ref_id {ident})" if ident is not None else "")
        bbox = require(rec, "bbox", path, where, list)
        if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
            raise FormatError(path, where, f"bbox {bbox!r} should be 4 numbers [x, y, w, h]")
        if bbox[2] <= 0 or bbox[3] <= 0:
            raise FormatError(path, where, f"bbox {bbox!r} has a non-positive width or height")
        rec_split = str(require(rec, "split", path, where, str))
        if split is not None and rec_split != split:
            continue
        records.append(
            {
                "ref_id": require(rec, "ref_id", path, where, (int, str)),
                "sent_id": rec.get("sent_id", i),
                "image_id": require(rec, "image_id", path, where, (int, str)),
                "sentence": require(rec, "sentence", path, where, str),
                "bbox": [float(v) for v in bbox],
                "split": rec_split,
            }
        )
    return records
