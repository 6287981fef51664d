"""easy-VQA questions: the three question types, their answers, and question-answer pairs as statements.

Example:
    >>> question_type("what color is the shape?"), question_statement("what shape is in the image?", "circle")[0]
    ('color', 'the shape is a circle')
"""

from __future__ import annotations

import re
from collections.abc import Sequence

#: easy-VQA question types, selectable with ``EasyVQADataModule(question_types=...)``.
QUESTION_TYPES = ("color", "shape", "yesno")
#: The 8 colours and 3 shapes of easy-VQA (the answers of ``"color"`` / ``"shape"`` questions).
COLORS = ("black", "blue", "brown", "gray", "green", "red", "teal", "yellow")
SHAPES = ("circle", "rectangle", "triangle")
#: Answers of each question type (a subset of the shared 13-answer vocabulary).
TYPE_ANSWERS = {"color": COLORS, "shape": SHAPES, "yesno": ("no", "yes")}
#: Bit mask of all (colour, shape) combinations; bit ``3 * colour_index + shape_index``.
ALL_COMBOS = (1 << (len(COLORS) * len(SHAPES))) - 1


def question_type(question: str) -> str:
    """``"yesno"`` (starts with "is " / "does "), ``"color"`` (mentions "color") or ``"shape"``.

    Checked against every question of the installed package (``tests/data/test_easy_vqa_tasks.py``): each type's answers
    are exactly its :data:`TYPE_ANSWERS` (train: 5,166 colour / 5,002 shape / 28,407 yes-no questions).

    Example:
        >>> [question_type(q) for q in ("what color is the shape?", "what is the red shape?", "is there a circle?")]
        ['color', 'shape', 'yesno']
    """
    q = question.strip().lower()
    if q.startswith(("is ", "does ")):
        return "yesno"
    return "color" if "color" in q else "shape"


def check_question_types(question_types: Sequence[str] | str | None) -> tuple[str, ...] | None:
    """Validate a ``question_types`` selection; ``None`` (all questions) stays ``None``.

    Example:
        >>> check_question_types(["shape", "color"])
        ('shape', 'color')
    """
    if question_types is None:
        return None
    if isinstance(question_types, str):
        question_types = [question_types]
    types = tuple(dict.fromkeys(str(t) for t in question_types))
    bad = [t for t in types if t not in QUESTION_TYPES]
    if bad or not types:
        raise ValueError(
            f"question_types={list(question_types)!r} is invalid ({bad or 'empty'}): use a non-empty subset of "
            f"{list(QUESTION_TYPES)}, e.g. ['color'], or None for every question"
        )
    return types


def _combos(color: str | None = None, shape: str | None = None) -> int:
    """Bit mask of the (colour, shape) combinations with that colour and/or shape (``None``: any)."""
    mask = 0
    for ci, c in enumerate(COLORS):
        for si, sh in enumerate(SHAPES):
            if (color is None or c == color) and (shape is None or sh == shape):
                mask |= 1 << (ci * len(SHAPES) + si)
    return mask


def question_statement(question: str, answer: str) -> tuple[str, int]:
    """A declarative statement equivalent to a question-answer pair, and the set of images it is true of.

    The set is a bit mask over the 24 (colour, shape) combinations (:func:`_combos`); easy-VQA images hold one
    shape, so this is exact. Templates: colour questions -> "the {shape} is {colour}" ("shape" when the question
    names none); shape questions -> "the [{colour}] shape is a {shape}"; yes/no questions -> "there is a {thing}" /
    "there is no {thing}" ({thing}: "{colour} shape" or a shape), negations ("not", "no") resolved with the answer.

    Raises:
        ValueError: a question outside easy-VQA's templates, or an answer of the wrong type.

    Example:
        >>> question_statement("what color is the circle?", "blue")[0]
        'the circle is blue'
        >>> text, mask = question_statement("is there not a red shape?", "yes")
        >>> text, mask & _combos(color="red"), bool(mask & _combos(color="blue"))
        ('there is no red shape', 0, True)
    """
    words = re.findall(r"[a-z]+", question.lower())
    color = next((w for w in words if w in COLORS), None)
    shape = next((w for w in words if w in SHAPES), None)
    kind = question_type(question)
    if answer not in TYPE_ANSWERS[kind]:
        raise ValueError(f"answer {answer!r} does not fit the {kind} question {question!r} ({TYPE_ANSWERS[kind]})")
    if kind == "color":
        return f"the {shape or 'shape'} is {answer}", _combos(color=answer, shape=shape)
    if kind == "shape":
        return f"the {color + ' ' if color else ''}shape is a {answer}", _combos(color=color, shape=answer)
    if (color is None) == (shape is None):
        raise ValueError(f"yes/no question {question!r} should name exactly one colour or one shape")
    thing, mask = (f"{color} shape", _combos(color=color)) if color else (str(shape), _combos(shape=shape))
    true = (answer == "yes") != any(w in ("not", "no") for w in words)
    return (f"there is a {thing}", mask) if true else (f"there is no {thing}", ALL_COMBOS & ~mask)


def image_combos(texts: Sequence[str], answers: Sequence[str], image_ids: Sequence[int]) -> dict[int, int]:
    """For every image, the (colour, shape) combinations consistent with all its question-answer pairs (bit mask;
    one bit = colour and shape known). Uses only the given questions, so the train split's facts come from train
    questions."""
    out: dict[int, int] = {}
    for q, a, img in zip(texts, answers, image_ids):
        out[int(img)] = out.get(int(img), ALL_COMBOS) & question_statement(q, a)[1]
    return out
