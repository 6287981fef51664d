"""Readers of the official annotation formats of the vision-and-language benchmarks of Gan et al. (AAAI 2022).

Each reader is a plain function ``read_*(path, ...) -> list[dict]`` returning one plain record (JSON-able dict)
per example. Malformed input raises :class:`FormatError` (a ``ValueError``) naming the file and the record
(index and/or id). See ``docs/data.md`` for a tiny example of every format.

Example:
    >>> import json, tempfile, os
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "ve.jsonl")
    >>> _ = open(p, "w").write(json.dumps({"Flickr30K_ID": "1", "sentence2": "A dog.", "gold_label": "neutral"}))
    >>> read_snli_ve(p)[0]["label"]
    1
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


class FormatError(ValueError):
    """Malformed annotation file; the message names the file and the record.

    Example:
        >>> str(FormatError("a.json", "record 3 (id 7)", "missing 'question'"))
        "a.json: record 3 (id 7): missing 'question'"
    """

    def __init__(self, path: str | os.PathLike[str], where: str, message: str) -> None:
        self.path = os.fspath(path)
        self.where = where
        super().__init__(f"{self.path}: {where}: {message}" if where else f"{self.path}: {message}")


def _check_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"annotation file {os.fspath(path)!r} does not exist")
    return p


def read_json(path: str | os.PathLike[str]) -> Any:
    """Load a JSON file; a syntax error becomes a :class:`FormatError` naming the file and the position."""
    p = _check_file(path)
    try:
        with p.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise FormatError(p, f"line {err.lineno} column {err.colno}", f"invalid JSON ({err.msg})") from err


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_index, record)`` for every non-empty line of a JSON-lines file (0-based line index)."""
    p = _check_file(path)
    with p.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise FormatError(p, f"line {i + 1}", f"invalid JSON ({err.msg})") from err
            if not isinstance(rec, dict):
                raise FormatError(p, f"line {i + 1}", f"expected a JSON object, got {type(rec).__name__}")
            yield i, rec


def require(rec: Mapping[str, Any], key: str, path: str | os.PathLike[str], where: str, kind: Any = None) -> Any:
    """``rec[key]``, or a :class:`FormatError` naming the file, the record and the missing/mistyped field."""
    if not isinstance(rec, Mapping):
        raise FormatError(path, where, f"expected a JSON object, got {type(rec).__name__}")
    if key not in rec:
        raise FormatError(path, where, f"missing field {key!r} (fields: {', '.join(sorted(rec))})")
    value = rec[key]
    if kind is not None and not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise FormatError(path, where, f"field {key!r} should be {names}, got {type(value).__name__} {value!r}")
    return value


from lightning_tickets.data.formats.flickr30k import read_flickr30k_karpathy  # noqa: E402
from lightning_tickets.data.formats.gqa import read_gqa  # noqa: E402
from lightning_tickets.data.formats.nlvr2 import nlvr2_image_ids, read_nlvr2  # noqa: E402
from lightning_tickets.data.formats.refcoco import read_refcoco_jsonl  # noqa: E402
from lightning_tickets.data.formats.snli_ve import SNLI_VE_LABELS, read_snli_ve  # noqa: E402
from lightning_tickets.data.formats.vcr import read_vcr, vcr_tokens_to_text  # noqa: E402
from lightning_tickets.data.formats.vqa_v2 import (  # noqa: E402
    build_answer_vocab,
    normalize_answer,
    process_digit_article,
    process_punctuation,
    read_vqa_v2,
    vqa_soft_score,
)

__all__ = [
    "FormatError",
    "SNLI_VE_LABELS",
    "build_answer_vocab",
    "iter_jsonl",
    "nlvr2_image_ids",
    "normalize_answer",
    "process_digit_article",
    "process_punctuation",
    "read_flickr30k_karpathy",
    "read_gqa",
    "read_json",
    "read_nlvr2",
    "read_refcoco_jsonl",
    "read_snli_ve",
    "read_vcr",
    "read_vqa_v2",
    "require",
    "vcr_tokens_to_text",
    "vqa_soft_score",
]
