"""VQA v2: official questions/annotations JSON, official answer normalisation, answer vocabulary, soft scores.

Official files (https://visualqa.org): ``v2_OpenEnded_mscoco_{train,val,test}2014_questions.json`` with
``{"data_subtype": "train2014", "questions": [{"image_id", "question", "question_id"}]}`` and
``v2_mscoco_{train,val}2014_annotations.json`` with ``{"annotations": [{"question_id", "image_id",
"multiple_choice_answer", "answers": [{"answer", "answer_confidence", "answer_id"} x 10], "answer_type",
"question_type"}]}``. Test questions have no annotations.

Answers are normalised as the official evaluation script (``vqaEval.py``) normalises predicted answers:
``processPunctuation`` then ``processDigitArticle`` (numbers as digits, articles dropped, contractions fixed).

Example:
    >>> normalize_answer("Two"), normalize_answer("the dog."), normalize_answer("yes!"), normalize_answer("dont")
    ('2', 'dog', 'yes', "don't")
    >>> [vqa_soft_score(n) for n in range(6)]
    [0.0, 0.3, 0.6, 0.9, 1.0, 1.0]
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from lightning_tickets.data.formats import FormatError, read_json, require

# ------------------------------------------------------------------ official normalisation (vqaEval.py, VQA API)
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "maam": "ma'am",
    "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock",
    "oughtnt": "oughtn't", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "wont": "won't", "wouldve": "would've",
    "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all",
    "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}  # fmt: skip
MANUAL_MAP = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = ("a", "an", "the")
PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: the official look-behind typo, kept for equivalence
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
_SOFT_SCORES = (0.0, 0.3, 0.6, 0.9)


def process_punctuation(text: str) -> str:
    """The official ``processPunctuation``: drop or blank punctuation, strip periods not followed by a digit.

    A punctuation mark is deleted when it touches a space anywhere in the string (or the string contains a
    digit-comma-digit group), otherwise replaced by a space.

    Example:
        >>> process_punctuation("t-shirt"), process_punctuation("yes, it is"), process_punctuation("2.5")
        ('t shirt', 'yes it is', '2.5')
    """
    out = text
    for p in PUNCT:
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    # The official call is ``periodStrip.sub("", outText, re.UNICODE)``: re.UNICODE (32) lands in ``count``.
    return _PERIOD_STRIP.sub("", out, count=int(re.UNICODE))


def process_digit_article(text: str) -> str:
    """The official ``processDigitArticle``: lower-case, number words -> digits, drop articles, fix contractions.

    Example:
        >>> process_digit_article("Two dogs"), process_digit_article("an apple"), process_digit_article("none")
        ('2 dogs', 'apple', '0')
    """
    words = [MANUAL_MAP.get(w, w) for w in text.lower().split()]
    words = [CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES]
    return " ".join(words)


def normalize_answer(answer: str) -> str:
    """Normalise an answer as the official VQA evaluation normalises predictions.

    Example:
        >>> normalize_answer(" A Red\\tcar "), normalize_answer("3,000"), normalize_answer("ten")
        ('red car', '3000', '10')
    """
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(answer))


def vqa_soft_score(count: int) -> float:
    """Training soft score of an answer given by ``count`` of the 10 annotators: 0, .3, .6, .9, then 1.

    This is the usual approximation (bottom-up-attention VQA, UNITER, LXMERT) of the official
    ``min(1, matches / 3)`` averaged over the 10 leave-one-out subsets.
    """
    if count < 0:
        raise ValueError(f"annotator count must be >= 0, got {count}")
    return _SOFT_SCORES[count] if count < 4 else 1.0


# ------------------------------------------------------------------------------------------------------ reading
def _where(i: int, rec: Any, key: str = "question_id") -> str:
    qid = rec.get(key) if isinstance(rec, Mapping) else None
    return f"record {i}" + (f" ({key} {qid})" if qid is not None else "")


def read_vqa_v2(
    questions: str | os.PathLike[str], annotations: str | os.PathLike[str] | None = None
) -> list[dict[str, Any]]:
    """Read one official VQA v2 split.

    Returns one record per question: ``question_id`` (int), ``image_id`` (int), ``question``, ``subtype``
    (``data_subtype`` of the questions file, e.g. ``"train2014"``), and, with ``annotations``, ``answers`` (the 10
    normalised annotator answers), ``multiple_choice_answer`` (normalised), ``answer_type``, ``question_type``
    (``None`` without annotations).

    Raises:
        FormatError: malformed questions/annotations, an annotation for an unknown question, a question without
            annotation, or image ids that disagree.
    """
    qdata = read_json(questions)
    qlist = require(qdata, "questions", questions, "top level", list)
    subtype = qdata.get("data_subtype", "")
    records: list[dict[str, Any]] = []
    index: dict[int, int] = {}
    for i, q in enumerate(qlist):
        where = _where(i, q)
        qid = require(q, "question_id", questions, where, int)
        if qid in index:
            raise FormatError(questions, where, f"duplicate question_id {qid}")
        index[qid] = len(records)
        records.append(
            {
                "question_id": qid,
                "image_id": require(q, "image_id", questions, where, (int, str)),
                "question": require(q, "question", questions, where, str),
                "subtype": subtype,
                "answers": None,
                "multiple_choice_answer": None,
                "answer_type": None,
                "question_type": None,
            }
        )
    if annotations is None:
        return records
    adata = read_json(annotations)
    seen: set[int] = set()
    for i, a in enumerate(require(adata, "annotations", annotations, "top level", list)):
        where = _where(i, a)
        qid = require(a, "question_id", annotations, where, int)
        if qid not in index:
            raise FormatError(annotations, where, f"question_id {qid} is not in {os.fspath(questions)}")
        rec = records[index[qid]]
        image_id = require(a, "image_id", annotations, where, (int, str))
        if image_id != rec["image_id"]:
            raise FormatError(annotations, where, f"image_id {image_id} != {rec['image_id']} in the questions file")
        answers = require(a, "answers", annotations, where, list)
        if not answers:
            raise FormatError(annotations, where, "empty 'answers'")
        rec["answers"] = [normalize_answer(require(x, "answer", annotations, where, str)) for x in answers]
        mc = a.get("multiple_choice_answer")
        rec["multiple_choice_answer"] = normalize_answer(mc) if isinstance(mc, str) else None
        rec["answer_type"] = a.get("answer_type")
        rec["question_type"] = a.get("question_type")
        seen.add(qid)
    missing = [r["question_id"] for r in records if r["question_id"] not in seen]
    if missing:
        raise FormatError(
            annotations,
            "",
            f"{len(missing)} question(s) of {os.fspath(questions)} have no annotation, e.g. question_id {missing[0]}",
        )
    return records


def build_answer_vocab(records: Sequence[Mapping[str, Any]], min_count: int = 9, top_k: int | None = None) -> list[str]:
    """Answer vocabulary from normalised ``multiple_choice_answer`` counts (one count per question).

    Keeps answers with at least ``min_count`` questions (9 gives the usual 3,129 answers on train+val), then the
    ``top_k`` most frequent when given; ordered by count (descending), ties alphabetically.

    Example:
        >>> recs = [{"multiple_choice_answer": a} for a in ["yes", "yes", "no", "2", "2", "2"]]
        >>> build_answer_vocab(recs, min_count=2), build_answer_vocab(recs, min_count=1, top_k=2)
        (['2', 'yes'], ['2', 'yes'])
    """
    counts = Counter(r["multiple_choice_answer"] for r in records if r.get("multiple_choice_answer") is not None)
    vocab = sorted((a for a, c in counts.items() if c >= min_count), key=lambda a: (-counts[a], a))
    return vocab[:top_k] if top_k is not None else vocab


def answer_targets(answers: Sequence[str] | None, ans2label: Mapping[str, int]) -> tuple[list[int], list[float]]:
    """Sparse soft targets ``(answer_ids, scores)`` of one question; answers outside the vocabulary are dropped.

    Example:
        >>> answer_targets(["2"] * 3 + ["3"] * 6 + ["many"], {"2": 0, "3": 1})
        ([0, 1], [0.9, 1.0])
    """
    if not answers:
        return [], []
    counts = Counter(answers)
    ids = sorted(ans2label[a] for a in counts if a in ans2label)
    label2ans = {ans2label[a]: a for a in counts if a in ans2label}
    return ids, [vqa_soft_score(counts[label2ans[i]]) for i in ids]
