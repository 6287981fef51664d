"""VCR: official JSON-lines ``{train,val,test}.jsonl``.

Fields used: ``question``, ``answer_choices`` (4), ``rationale_choices`` (4): token lists where an object
reference is a list of indices into ``objects`` (detector class names, e.g. ``"person"``); ``answer_label``,
``rationale_label`` (absent in test), ``img_fn``, ``img_id``, ``annot_id``. As in UNITER's text input, object
references are replaced by the object names (several indices -> ``"person and car"``).

Example:
    >>> vcr_tokens_to_text(["Why", "is", [0], "next", "to", [1, 2], "?"], ["person", "person", "dog"])
    'Why is person next to person and dog ?'
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from lightning_tickets.data.formats import FormatError, iter_jsonl, require

NUM_CHOICES = 4


def vcr_tokens_to_text(tokens: Sequence[Any], objects: Sequence[str]) -> str:
    """Join VCR tokens, replacing each object-index list by the object names joined with ``" and "``.

    Raises:
        ValueError: an object index that is not an int or is out of range for ``objects``.
    """
    words = []
    for tok in tokens:
        if isinstance(tok, str):
            words.append(tok)
            continue
        if not isinstance(tok, list) or not tok:
            raise ValueError(f"token {tok!r} is neither a string nor a non-empty list of object indices")
        names = []
        for idx in tok:
            if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < len(objects):
                raise ValueError(f"object index {idx!r} out of range for {len(objects)} objects")
            names.append(objects[idx])
        words.append(" and ".join(names))
    return " ".join(words)


def read_vcr(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One record per line: ``annot_id``, ``img_fn``, ``img_id``, ``objects``, ``question`` (text),
    ``answer_choices`` / ``rationale_choices`` (4 texts each), ``answer_label`` / ``rationale_label`` (-1 when
    absent, as in the test file)."""
    records = []
    for i, rec in iter_jsonl(path):
        ident = rec.get("annot_id")
        where = f"line {i + 1}" + (f" (annot_id {ident})" if ident is not None else "")
        objects = require(rec, "objects", path, where, list)
        out: dict[str, Any] = {
            "annot_id": str(rec.get("annot_id", i)),
            "img_fn": require(rec, "img_fn", path, where, str),
            "img_id": str(rec.get("img_id", "")),
            "objects": objects,
        }
        try:
            out["question"] = vcr_tokens_to_text(require(rec, "question", path, where, list), objects)
            for key in ("answer_choices", "rationale_choices"):
                choices = require(rec, key, path, where, list)
                if len(choices) != NUM_CHOICES:
                    raise FormatError(path, where, f"{key} has {len(choices)} choices, expected {NUM_CHOICES}")
                out[key] = [vcr_tokens_to_text(c, objects) for c in choices]
        except (ValueError, TypeError) as err:
            if isinstance(err, FormatError):
                raise
            raise FormatError(path, where, str(err)) from err
        for key in ("answer_label", "rationale_label"):
            label = rec.get(key, -1)
            if not isinstance(label, int) or isinstance(label, bool) or not -1 <= label < NUM_CHOICES:
                raise FormatError(path, where, f"{key} {label!r} should be an int in 0..{NUM_CHOICES - 1}")
            out[key] = label
        records.append(out)
    return records
