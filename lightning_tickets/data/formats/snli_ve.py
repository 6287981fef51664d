"""SNLI-VE: official JSON-lines ``snli_ve_{train,dev,test}.jsonl``.

Each line is an SNLI record whose premise is a Flickr30k image: ``Flickr30K_ID`` (image), ``sentence2``
(hypothesis), ``gold_label`` in ``entailment`` / ``neutral`` / ``contradiction`` (plus ``pairID``,
``sentence1`` = the caption, ...). Labels: 0 entailment, 1 neutral, 2 contradiction.

Example:
    >>> import json, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "ve.jsonl")
    >>> _ = open(p, "w").write(json.dumps({"Flickr30K_ID": "3416050480", "sentence2": "A man sleeps.",
    ...                                    "gold_label": "contradiction", "pairID": "3416050480.jpg#4r1c"}))
    >>> read_snli_ve(p)[0]["label"], read_snli_ve(p)[0]["image_id"]
    (2, '3416050480')
"""

from __future__ import annotations

import os
from typing import Any

from lightning_tickets.data.formats import FormatError, iter_jsonl, require

SNLI_VE_LABELS = ("entailment", "neutral", "contradiction")


def read_snli_ve(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One record per line: ``pair_id``, ``image_id`` (str), ``sentence`` (hypothesis), ``label`` (int)."""
    records = []
    for i, rec in iter_jsonl(path):
        where = f"line {i + 1}" + (f" (pairID {rec['pairID']})" if "pairID" in rec else "")
        gold = require(rec, "gold_label", path, where, str)
        if gold not in SNLI_VE_LABELS:
            raise FormatError(path, where, f"gold_label {gold!r} is not one of {', '.join(SNLI_VE_LABELS)}")
        records.append(
            {
                "pair_id": rec.get("pairID", str(i)),
                "image_id": str(require(rec, "Flickr30K_ID", path, where, (str, int))),
                "sentence": require(rec, "sentence2", path, where, str),
                "label": SNLI_VE_LABELS.index(gold),
            }
        )
    return records
