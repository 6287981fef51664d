"""Readers of the official annotation formats: parsing, normalisation, vocabularies, error messages."""

from __future__ import annotations

import json

import pytest

from lightning_tickets.data.formats import (
    FormatError,
    build_answer_vocab,
    nlvr2_image_ids,
    normalize_answer,
    read_flickr30k_karpathy,
    read_gqa,
    read_nlvr2,
    read_refcoco_jsonl,
    read_snli_ve,
    read_vcr,
    read_vqa_v2,
    vcr_tokens_to_text,
    vqa_soft_score,
)
from lightning_tickets.data.formats.gqa import build_gqa_vocab
from lightning_tickets.data.formats.vqa_v2 import answer_targets, process_digit_article, process_punctuation


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def vqa_files(tmp_path, answers_per_q, prefix="train"):
    """Official VQA v2 questions + annotations with 10 answers per question."""
    qs, anns = [], []
    for k, answers in enumerate(answers_per_q):
        qid, image_id = 1000 + k, 42 + k
        qs.append({"image_id": image_id, "question": f"What is thing {k}?", "question_id": qid})
        anns.append(
            {
                "question_id": qid,
                "image_id": image_id,
                "question_type": "what is",
                "answer_type": "other",
                "multiple_choice_answer": answers[0],
                "answers": [
                    {"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(answers)
                ],
            }
        )
    q = write_json(tmp_path / f"{prefix}_q.json", {"data_subtype": f"{prefix}2014", "questions": qs})
    a = write_json(tmp_path / f"{prefix}_a.json", {"data_subtype": f"{prefix}2014", "annotations": anns})
    return q, a


# ------------------------------------------------------------------------------------------------------ VQA v2
@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("Two", "2"),
        ("the dog.", "dog"),
        ("Yes!", "yes"),
        ("an apple", "apple"),
        ("None", "0"),
        ("dont", "don't"),
        ("t-shirt", "t shirt"),
        ("3,000", "3000"),
        ("1.5", "1.5"),
        ("hello , world", "hello world"),
        (" A Red\tcar\n", "red car"),
        ("fire hydrant?", "fire hydrant"),
        ("mr. smith", "mr smith"),
        ("ten", "10"),
        ("isnt", "isn't"),
    ],
)
def test_official_answer_normalisation(raw, norm):
    assert normalize_answer(raw) == norm


def test_normalisation_steps_match_vqa_eval():
    assert process_punctuation("a/b") == "a b"  # no space around "/": blanked
    assert process_punctuation("a / b") == "a  b"  # touches a space: deleted
    assert process_punctuation("3,000 and a/b") == "3000 and ab"  # a digit-comma-digit group: every mark deleted
    assert process_digit_article("The Three Dogs") == "3 dogs"


def test_soft_scores():
    assert [vqa_soft_score(n) for n in range(11)] == [0.0, 0.3, 0.6, 0.9] + [1.0] * 7
    ids, scores = answer_targets(["cat"] * 4 + ["dog"] * 3 + ["cats"] * 2 + ["bird"], {"dog": 0, "cat": 1, "bird": 2})
    assert ids == [0, 1, 2] and scores == [0.9, 1.0, 0.3]
    assert answer_targets(["zebra"] * 10, {"dog": 0}) == ([], [])
    with pytest.raises(ValueError):
        vqa_soft_score(-1)


def test_read_vqa_v2_and_vocab(tmp_path):
    q, a = vqa_files(tmp_path, [["Two"] * 10, ["yes"] * 6 + ["Yes!"] * 4, ["2"] * 9 + ["no"], ["no"] * 10])
    recs = read_vqa_v2(q, a)
    assert len(recs) == 4 and recs[0]["question_id"] == 1000 and recs[0]["image_id"] == 42
    assert recs[0]["subtype"] == "train2014" and recs[0]["answers"] == ["2"] * 10
    assert recs[1]["answers"] == ["yes"] * 10 and recs[1]["multiple_choice_answer"] == "yes"
    assert build_answer_vocab(recs, min_count=2) == ["2"]
    assert build_answer_vocab(recs, min_count=1) == ["2", "no", "yes"]
    assert build_answer_vocab(recs, min_count=1, top_k=2) == ["2", "no"]
    test = read_vqa_v2(q)  # test-dev: questions only
    assert test[0]["answers"] is None and test[0]["question"] == "What is thing 0?"


def test_vqa_v2_errors(tmp_path):
    q, a = vqa_files(tmp_path, [["x"] * 10, ["y"] * 10])
    bad_q = write_json(tmp_path / "bad_q.json", {"questions": [{"question_id": 1, "image_id": 2}]})
    with pytest.raises(FormatError, match=r"bad_q\.json: record 0 \(question_id 1\): missing field 'question'"):
        read_vqa_v2(bad_q)
    ann = json.loads(a.read_text())
    ann["annotations"][1]["question_id"] = 77
    with pytest.raises(FormatError, match=r"record 1 \(question_id 77\): question_id 77 is not in .*train_q\.json"):
        read_vqa_v2(q, write_json(tmp_path / "a2.json", ann))
    ann["annotations"] = ann["annotations"][:1]
    with pytest.raises(FormatError, match=r"a3\.json: 1 question\(s\) .* no annotation, e\.g\. question_id 1001"):
        read_vqa_v2(q, write_json(tmp_path / "a3.json", ann))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(FormatError, match=r"broken\.json: line 1 column 2: invalid JSON"):
        read_vqa_v2(tmp_path / "broken.json")
    with pytest.raises(FileNotFoundError, match="nothere"):
        read_vqa_v2(tmp_path / "nothere.json")


# --------------------------------------------------------------------------------------------------------- GQA
def test_read_gqa(tmp_path):
    data = {
        "20968379": {"imageId": "n288870", "question": "Is the man wearing a hat?", "answer": "no", "types": {}},
        "20968380": {"imageId": "n288870", "question": "What color is it?", "answer": "white"},
        "111": {"imageId": "2354786", "question": "Is it red?", "answer": "no"},
    }
    recs = read_gqa(write_json(tmp_path / "train_balanced_questions.json", data))
    assert [r["question_id"] for r in recs] == ["20968379", "20968380", "111"]
    assert recs[2]["image_id"] == "2354786" and build_gqa_vocab(recs) == ["no", "white"]
    sub = read_gqa(write_json(tmp_path / "submission.json", {"5": {"imageId": "a", "question": "q?"}}))
    assert sub[0]["answer"] is None
    with pytest.raises(FormatError, match=r"bad\.json: record 1 \(question_id 9\): missing field 'imageId'"):
        read_gqa(write_json(tmp_path / "bad.json", {"8": data["111"], "9": {"question": "q?", "answer": "a"}}))


# ----------------------------------------------------------------------------------------------------- SNLI-VE
def test_read_snli_ve(tmp_path):
    rows = [
        {
            "Flickr30K_ID": "3416050480",
            "sentence1": "A man.",
            "sentence2": "A man sleeps.",
            "pairID": "p0",
            "gold_label": "contradiction",
        },
        {"Flickr30K_ID": "3416050480", "sentence2": "A person.", "pairID": "p1", "gold_label": "entailment"},
        {"Flickr30K_ID": 7, "sentence2": "A tall man.", "pairID": "p2", "gold_label": "neutral"},
    ]
    recs = read_snli_ve(write_jsonl(tmp_path / "snli_ve_train.jsonl", rows))
    assert [r["label"] for r in recs] == [2, 0, 1] and recs[0]["sentence"] == "A man sleeps."
    assert recs[2]["image_id"] == "7" and recs[1]["pair_id"] == "p1"
    rows[1]["gold_label"] = "-"
    with pytest.raises(FormatError, match=r"ve\.jsonl: line 2 \(pairID p1\): gold_label '-' is not one of"):
        read_snli_ve(write_jsonl(tmp_path / "ve.jsonl", rows))


# ------------------------------------------------------------------------------------------------------- NLVR2
def test_nlvr2_pair_image_ids(tmp_path):
    assert nlvr2_image_ids("dev-850-0-0") == ("dev-850-0-img0", "dev-850-0-img1")
    assert nlvr2_image_ids("test1-0-1-3") == ("test1-0-1-img0", "test1-0-1-img1")
    assert nlvr2_image_ids("train-10171-0-0") == ("train-10171-0-img0", "train-10171-0-img1")
    rows = [
        {"identifier": "dev-850-0-0", "sentence": "The left image has two dogs.", "label": "True", "synset": "dog"},
        {"identifier": "dev-850-1-2", "sentence": "No dogs.", "label": "False"},
    ]
    recs = read_nlvr2(write_jsonl(tmp_path / "dev.json", rows))
    assert [r["label"] for r in recs] == [1, 0]
    assert recs[1]["image_ids"] == ["dev-850-1-img0", "dev-850-1-img1"]
    rows[1]["identifier"] = "dev-850"
    with pytest.raises(FormatError, match=r"dev2\.json: line 2 \(identifier dev-850\): .*not of the form"):
        read_nlvr2(write_jsonl(tmp_path / "dev2.json", rows))
    rows[1] = {"identifier": "dev-1-1-1", "sentence": "x", "label": "maybe"}
    with pytest.raises(FormatError, match=r"line 2 .*label 'maybe' should be 'True' or 'False'"):
        read_nlvr2(write_jsonl(tmp_path / "dev3.json", rows))


# --------------------------------------------------------------------------------------------------------- VCR
def vcr_row(annot_id="val-0", answer_label=1, rationale_label=2):
    return {
        "annot_id": annot_id,
        "img_id": annot_id,
        "img_fn": "lsmdc_movie/clip@0.jpg",
        "movie": "movie",
        "objects": ["person", "person", "dog"],
        "question": ["Why", "is", [0], "looking", "at", [1, 2], "?"],
        "answer_choices": [
            [[0], "is", "angry", "."],
            ["They", "are", "friends", "."],
            ["No", "reason", "."],
            [[2], "barked", "."],
        ],
        "rationale_choices": [
            ["Because", [0], "frowns", "."],
            ["It", "is", "late", "."],
            [[1], "smiles", "."],
            ["The", [2], "is", "loud", "."],
        ],
        "answer_label": answer_label,
        "rationale_label": rationale_label,
    }


def test_vcr_object_names(tmp_path):
    assert vcr_tokens_to_text(["Is", [0, 1], "here", "?"], ["person", "car"]) == "Is person and car here ?"
    recs = read_vcr(write_jsonl(tmp_path / "val.jsonl", [vcr_row(), vcr_row("val-1", 0, 0)]))
    r = recs[0]
    assert r["question"] == "Why is person looking at person and dog ?"
    assert r["answer_choices"][3] == "dog barked ." and r["rationale_choices"][0] == "Because person frowns ."
    assert (r["answer_label"], r["rationale_label"], r["img_fn"]) == (1, 2, "lsmdc_movie/clip@0.jpg")
    test_row = vcr_row("test-0")
    del test_row["answer_label"], test_row["rationale_label"]
    assert read_vcr(write_jsonl(tmp_path / "test.jsonl", [test_row]))[0]["answer_label"] == -1


def test_vcr_errors(tmp_path):
    bad = vcr_row("val-7")
    bad["question"] = ["Who", "is", [5], "?"]
    with pytest.raises(FormatError, match=r"v\.jsonl: line 2 \(annot_id val-7\): object index 5 out of range for 3"):
        read_vcr(write_jsonl(tmp_path / "v.jsonl", [vcr_row(), bad]))
    bad = vcr_row("val-8")
    bad["answer_choices"] = bad["answer_choices"][:3]
    with pytest.raises(FormatError, match=r"annot_id val-8\): answer_choices has 3 choices, expected 4"):
        read_vcr(write_jsonl(tmp_path / "w.jsonl", [bad]))


# ---------------------------------------------------------------------------------------------------- RefCOCO+
def test_read_refcoco(tmp_path):
    rows = [
        {
            "ref_id": 0,
            "sent_id": 0,
            "image_id": 581857,
            "sentence": "the lady with the blue shirt",
            "bbox": [103.93, 299.99, 134.22, 177.42],
            "split": "train",
        },
        {
            "ref_id": 1,
            "sent_id": 1,
            "image_id": 581857,
            "sentence": "man on left",
            "bbox": [0, 0, 10, 20],
            "split": "testA",
        },
    ]
    path = write_jsonl(tmp_path / "refcoco+.jsonl", rows)
    assert [r["ref_id"] for r in read_refcoco_jsonl(path)] == [0, 1]
    (test,) = read_refcoco_jsonl(path, split="testA")
    assert test["bbox"] == [0.0, 0.0, 10.0, 20.0] and test["sentence"] == "man on left"
    rows[1]["bbox"] = [0, 0, 10]
    with pytest.raises(FormatError, match=r"r2\.jsonl: line 2 \(ref_id 1\): bbox \[0, 0, 10\] should be 4 numbers"):
        read_refcoco_jsonl(write_jsonl(tmp_path / "r2.jsonl", rows))


# --------------------------------------------------------------------------------------------------- Flickr30k
def test_read_flickr30k_karpathy(tmp_path):
    data = {
        "dataset": "flickr30k",
        "images": [
            {
                "filename": "1000092795.jpg",
                "imgid": 0,
                "split": "train",
                "sentids": [0, 1],
                "sentences": [
                    {"raw": "Two young guys.", "tokens": ["two"], "imgid": 0, "sentid": 0},
                    {"raw": "Two men.", "tokens": ["two"], "imgid": 0, "sentid": 1},
                ],
            },
            {"filename": "10002456.jpg", "imgid": 1, "split": "test", "sentences": [{"raw": "Workers."}]},
        ],
    }
    path = write_json(tmp_path / "dataset_flickr30k.json", data)
    (train,) = read_flickr30k_karpathy(path, "train")
    assert train["stem"] == "1000092795" and train["captions"] == ["Two young guys.", "Two men."]
    assert len(read_flickr30k_karpathy(path)) == 2 and read_flickr30k_karpathy(path, "val") == []
    data["images"][1]["sentences"] = [{"tokens": ["x"]}]
    with pytest.raises(FormatError, match=r"f\.json: image 1 \(10002456\.jpg\) sentence 0: missing field 'raw'"):
        read_flickr30k_karpathy(write_json(tmp_path / "f.json", data))
