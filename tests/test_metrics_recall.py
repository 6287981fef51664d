"""RetrievalRecall: hand-computed IR/TR Recall@K on a known matrix, block-wise filling, ties, DDP-style merge."""

from __future__ import annotations

import pytest
import torch

from lightning_tickets.metrics.recall import RetrievalRecall, recall_at_k

# 4 captions x 3 images; captions 0 and 1 describe image 0, caption 2 image 1, caption 3 image 2.
TXT2IMG = [0, 0, 1, 2]
IMG2TXTS = [[0, 1], [2], [3]]
SCORES = torch.tensor(
    [
        [0.9, 0.5, 0.1],  # caption 0: its image ranks 1st
        [0.2, 0.8, 0.3],  # caption 1: its image ranks 3rd
        [0.6, 0.7, 0.0],  # caption 2: 1st
        [0.4, 0.1, 0.4],  # caption 3: tied with image 0 -> counted 2nd (pessimistic)
    ]
)
# IR (per caption): ranks 0, 2, 0, 1 -> R@1 = 2/4, R@2 = 3/4, R@3 = 4/4
# TR (per image, best of its captions): image 0: caption 0 (0.9) 1st; image 1: caption 2 (0.7) behind caption 1 (0.8)
#   -> 2nd; image 2: caption 3 (0.4) 1st -> R@1 = 2/3, R@2 = R@3 = 1
EXPECTED = {"ir_r1": 0.5, "ir_r2": 0.75, "ir_r3": 1.0, "tr_r1": 2 / 3, "tr_r2": 1.0, "tr_r3": 1.0}


def all_pairs(n_txt: int, n_img: int) -> tuple[torch.Tensor, torch.Tensor]:
    t, i = torch.meshgrid(torch.arange(n_txt), torch.arange(n_img), indexing="ij")
    return t.flatten(), i.flatten()


def check(values: dict) -> None:
    for key, value in EXPECTED.items():
        assert float(values[key]) == pytest.approx(value, abs=1e-6), key
    assert float(values["rsum"]) == pytest.approx(sum(EXPECTED.values()), abs=1e-5)


def test_recall_hand_computed_filled_block_by_block_in_any_order():
    metric = RetrievalRecall(TXT2IMG, IMG2TXTS, top_k=(1, 2, 3))
    t, i = all_pairs(4, 3)
    order = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    for block in order.split(5):  # image-major or not, any block size
        metric.update(SCORES[t[block], i[block]], t[block], i[block])
    values = metric.compute()
    assert sorted(values) == ["ir_r1", "ir_r2", "ir_r3", "rsum", "tr_r1", "tr_r2", "tr_r3"]
    check(values)
    assert metric.scores.shape == (4, 3) and metric.filled_fraction() == 1.0


def test_recall_chunked_compute_matches():
    metric = RetrievalRecall(TXT2IMG, IMG2TXTS, top_k=(1, 2, 3), chunk_size=1)
    metric.update(SCORES.flatten(), *all_pairs(4, 3))
    check(metric.compute())


def test_constant_scores_are_not_perfect():
    metric = RetrievalRecall(TXT2IMG, IMG2TXTS, top_k=(1, 3))
    metric.update(torch.zeros(12), *all_pairs(4, 3))
    values = metric.compute()
    assert float(values["ir_r1"]) == 0.0 and float(values["ir_r3"]) == 1.0
    assert float(values["tr_r1"]) == 0.0


def test_unscored_pairs_warn_and_rank_last():
    metric = RetrievalRecall(TXT2IMG, IMG2TXTS, top_k=(1,))
    t, i = all_pairs(4, 3)
    keep = t != 1  # caption 1 never scored
    metric.update(SCORES.flatten()[keep], t[keep], i[keep])
    with pytest.warns(UserWarning, match="3 of 12"):
        values = metric.compute()
    assert float(values["ir_r1"]) == pytest.approx(2 / 4)


def test_ddp_merge_uses_max_over_disjoint_fills():
    t, i = all_pairs(4, 3)
    a, b = RetrievalRecall(TXT2IMG, IMG2TXTS, (1, 2, 3)), RetrievalRecall(TXT2IMG, IMG2TXTS, (1, 2, 3))
    assert a._reductions["scores"].__name__ == "dim_zero_max"
    a.update(SCORES.flatten()[:7], t[:7], i[:7])  # "rank 0"
    b.update(SCORES.flatten()[5:], t[5:], i[5:])  # "rank 1" (overlap = sampler padding duplicates)
    a.merge_state(b)
    check(a.compute())


def test_validation_of_ground_truth_and_indices():
    with pytest.raises(ValueError, match="img2txts"):
        RetrievalRecall([0, 1], [[0], [0]])
    with pytest.raises(ValueError):
        RetrievalRecall([])
    metric = RetrievalRecall([0, 1])
    with pytest.raises(IndexError, match="another split"):
        metric.update(torch.zeros(1), torch.tensor([2]), torch.tensor([0]))
    assert metric.num_images == 2 and metric.top_k == (1, 5, 10)


def test_recall_at_k_query_without_relevant_never_hits():
    hits = recall_at_k(torch.tensor([[1.0, 0.0]]), torch.tensor([[False, False]]), (1, 2))
    assert hits[1].tolist() == [False] and hits[2].tolist() == [False]
