"""GQA: official balanced questions JSON ``{question_id: {"imageId", "question", "answer", ...}}``.

Files (https://cs.stanford.edu/people/dorarad/gqa): ``train_balanced_questions.json``,
``val_balanced_questions.json``, ``testdev_balanced_questions.json``; ``submission_all_questions.json`` has no
``answer``. GQA answers are single short strings used as given (LXMERT/UNITER do not normalise them).

Example:
    >>> import json, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "q.json")
    >>> _ = open(p, "w").write(json.dumps({"201": {"imageId": "n1", "question": "Is it red?", "answer": "no"}}))
    >>> read_gqa(p)
    [{'question_id': '201', 'image_id': 'n1', 'question': 'Is it red?', 'answer': 'no'}]
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from lightning_tickets.data.formats import FormatError, read_json, require


def read_gqa(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One record per question: ``question_id`` (str), ``image_id`` (``imageId``), ``question``, ``answer``
    (``None`` when the file has no answers), in file order."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise FormatError(path, "top level", f"expected an object {{question_id: question}}, got {type(data).__name__}")
    records = []
    for i, (qid, q) in enumerate(data.items()):
        where = f"record {i} (question_id {qid})"
        answer = q.get("answer") if isinstance(q, Mapping) else None
        if answer is not None and not isinstance(answer, str):
            raise FormatError(path, where, f"field 'answer' should be str, got {type(answer).__name__}")
        records.append(
            {
                "question_id": str(qid),
                "image_id": str(require(q, "imageId", path, where, (str, int))),
                "question": require(q, "question", path, where, str),
                "answer": answer,
            }
        )
    return records


def build_gqa_vocab(records: Sequence[Mapping[str, Any]], min_count: int = 1) -> list[str]:
    """Answers seen at least ``min_count`` times, most frequent first (ties alphabetically).

    Example:
        >>> build_gqa_vocab([{"answer": "no"}, {"answer": "yes"}, {"answer": "no"}, {"answer": None}])
        ['no', 'yes']
    """
    counts = Counter(r["answer"] for r in records if r.get("answer") is not None)
    return sorted((a for a, c in counts.items() if c >= min_count), key=lambda a: (-counts[a], a))
