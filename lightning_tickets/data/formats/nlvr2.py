"""NLVR2: official JSON-lines ``{train,dev,test1}.json`` (one JSON object per line).

Fields used: ``identifier`` (``{split}-{set_id}-{pair_id}-{sentence_id}``, e.g. ``"dev-850-0-0"``),
``sentence``, ``label`` (``"True"``/``"False"``). The two images of a record are named, as in the NLVR2
release, ``{split}-{set_id}-{pair_id}-img0`` (left) and ``...-img1`` (right) (``.png`` files).

Example:
    >>> nlvr2_image_ids("dev-850-0-3")
    ('dev-850-0-img0', 'dev-850-0-img1')
"""

from __future__ import annotations

import os
from typing import Any

from lightning_tickets.data.formats import FormatError, iter_jsonl, require

_LABELS = {"True": 1, "False": 0, "true": 1, "false": 0, True: 1, False: 0}


def nlvr2_image_ids(identifier: str) -> tuple[str, str]:
    """Left/right image ids of an NLVR2 identifier ``{split}-{set}-{pair}-{sentence}``.

    Raises:
        ValueError: when the identifier does not have that shape.
    """
    parts = identifier.split("-")
    if len(parts) != 4 or not all(p.isdigit() for p in parts[1:]) or not parts[0]:
        raise ValueError(f"NLVR2 identifier {identifier!r} is not of the form '<split>-<set>-<pair>-<sentence>'")
    base = "-".join(parts[:3])
    return f"{base}-img0", f"{base}-img1"


def read_nlvr2(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One record per line: ``identifier``, ``sentence``, ``label`` (1 = True, 0 = False), ``image_ids``
    (left, right)."""
    records = []
    for i, rec in iter_jsonl(path):
        ident = rec.get("identifier")
        where = f"line {i + 1}" + (f" (identifier {ident})" if ident is not None else "")
        ident = require(rec, "identifier", path, where, str)
        label = require(rec, "label", path, where, (str, bool))
        if label not in _LABELS:
            raise FormatError(path, where, f"label {label!r} should be 'True' or 'False'")
        try:
            image_ids = nlvr2_image_ids(ident)
        except ValueError as err:
            raise FormatError(path, where, str(err)) from err
        records.append(
            {
                "identifier": ident,
                "sentence": require(rec, "sentence", path, where, str),
                "label": _LABELS[label],
                "image_ids": list(image_ids),
            }
        )
    return records
