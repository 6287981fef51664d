"""Image sources (HDF5 / bottom-up TSV / ViLT image folder) and the contract collators."""

from __future__ import annotations

import base64
import pickle

import numpy as np
import pytest
import torch

from lightning_tickets.data.collators import MultipleChoiceCollator, PairCollator, VLBatchCollator, pad_images
from lightning_tickets.data.images import (
    TSV_FIELDNAMES,
    HDF5Features,
    ImageFolder,
    MultiSource,
    TSVFeatures,
    normalized_boxes,
    open_image_source,
    vilt_resize_shape,
)

IMAGES = {"img0": (2, 100, 50), "img1": (3, 200, 100), "img2": (1, 40, 40)}  # id: (regions, width, height)
DIM = 6


def _arrays(k: int, n: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    feat = np.full((n, DIM), float(k), dtype=np.float32) + np.arange(n, dtype=np.float32)[:, None] / 10
    boxes = np.array([[0, 0, w / 2, h / 2]] * n, dtype=np.float32)
    boxes[0] = [0, 0, w, h]
    return feat, boxes


def write_h5(path, images=IMAGES, dim=DIM, soft=False):
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        for k, (key, (n, w, h)) in enumerate(images.items()):
            feat, boxes = _arrays(k, n, w, h)
            g = f.create_group(key)
            g.create_dataset("features", data=np.pad(feat, ((0, 0), (0, dim - DIM))).astype(np.float16))
            g.create_dataset("boxes", data=boxes)
            if soft:
                g.create_dataset("soft_labels", data=np.full((n, 4), 0.25, dtype=np.float32))
            g.attrs["image_w"], g.attrs["image_h"] = w, h
    return path


def write_tsv(path, images=IMAGES):
    b64 = lambda a: base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()  # noqa: E731
    with open(path, "w") as f:
        for k, (key, (n, w, h)) in enumerate(images.items()):
            feat, boxes = _arrays(k, n, w, h)
            row = {
                "img_id": key,
                "img_h": h,
                "img_w": w,
                "objects_id": b64(np.arange(n, dtype=np.int64)),
                "objects_conf": b64(np.ones(n, np.float32)),
                "attrs_id": b64(np.zeros(n, np.int64)),
                "attrs_conf": b64(np.ones(n, np.float32)),
                "num_boxes": n,
                "boxes": b64(boxes),
                "features": b64(feat),
            }
            f.write("\t".join(str(row[name]) for name in TSV_FIELDNAMES) + "\n")
    return path


def write_pngs(root, sizes=((640, 480), (100, 300), (1000, 200))):
    Image = pytest.importorskip("PIL.Image")
    root.mkdir(parents=True, exist_ok=True)
    for k, (w, h) in enumerate(sizes):
        sub = root / "sub" if k == 2 else root
        sub.mkdir(exist_ok=True)
        Image.new("RGB", (w, h), (255, 0, 0) if k else (255, 255, 255)).save(sub / f"img{k}.png")
    return root


def test_normalized_boxes_are_the_7d_contract():
    pos = normalized_boxes(np.array([[10, 5, 60, 25], [-5, 0, 200, 50]]), image_w=100, image_h=50)
    assert pos.dtype == torch.float32
    assert pos[0].tolist() == pytest.approx([0.1, 0.1, 0.6, 0.5, 0.5, 0.4, 0.2])
    assert pos[1].tolist() == pytest.approx([0, 0, 1, 1, 1, 1, 1])  # clipped to the image


@pytest.mark.parametrize("kind", ["h5", "tsv"])
def test_region_sources_read_features_and_boxes(tmp_path, kind):
    path = write_h5(tmp_path / "f.h5") if kind == "h5" else write_tsv(tmp_path / "f.tsv")
    src = open_image_source(str(path), img_dim=DIM)
    assert isinstance(src, HDF5Features if kind == "h5" else TSVFeatures)
    assert sorted(src.keys()) == ["img0", "img1", "img2"] and "img1" in src and "nope" not in src
    item = src["img1"]
    assert set(item) == {"img_feat", "img_pos_feat"}
    assert item["img_feat"].shape == (3, DIM) and item["img_feat"].dtype == torch.float32
    assert item["img_feat"][2, 0].item() == pytest.approx(1.2, abs=1e-3)
    expected = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [0, 0, 0.5, 0.5, 0.5, 0.5, 0.25]])
    assert torch.allclose(item["img_pos_feat"][:2], expected)
    assert src.image_wh("img1") == (200.0, 100.0)
    assert src["img1"]["img_pos_feat"] is item["img_pos_feat"]  # boxes computed once per image
    clone = pickle.loads(pickle.dumps(src))  # picklable after use (DataLoader workers)
    assert torch.equal(clone["img0"]["img_feat"], src["img0"]["img_feat"])


def test_hdf5_soft_labels(tmp_path):
    src = HDF5Features(write_h5(tmp_path / "f.hdf5", soft=True))
    assert src["img0"]["img_soft_label"].shape == (2, 4)


@pytest.mark.parametrize("kind", ["h5", "tsv"])
def test_region_source_errors(tmp_path, kind):
    path = write_h5(tmp_path / "f.h5") if kind == "h5" else write_tsv(tmp_path / "f.tsv")
    with pytest.raises(KeyError, match=r"'missing'.*f\." + kind):
        open_image_source(path)["missing"]
    with pytest.raises(ValueError, match=rf"f\.{kind}: image 'img0': feature dimension {DIM} != expected img_dim 2048"):
        open_image_source(path, img_dim=2048)["img0"]
    with pytest.raises(FileNotFoundError, match="nothere"):
        open_image_source(tmp_path / f"nothere.{kind}")


def test_tsv_malformed_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("imgX\t10\t10\tnot-enough-fields\n")
    with pytest.raises(ValueError, match=r"bad\.tsv: image 'imgX': 4 tab-separated fields, expected 10"):
        TSVFeatures(path)["imgX"]


def test_vilt_resize_rule():
    assert vilt_resize_shape(640, 480) == (512, 384)
    assert vilt_resize_shape(100, 300) == (192, 640)  # 384x1152 -> longer side 640: 213x640 -> multiples of 32
    assert vilt_resize_shape(1000, 200) == (640, 128)
    for w, h in [(333, 500), (500, 333), (1200, 900)]:
        nw, nh = vilt_resize_shape(w, h)
        assert nw % 32 == 0 and nh % 32 == 0 and max(nw, nh) <= 640 and min(nw, nh) <= 384


def test_image_folder_pixels(tmp_path):
    src = open_image_source(write_pngs(tmp_path / "imgs"))
    assert isinstance(src, ImageFolder)
    px = src["img0"]["pixel_values"]  # white 640x480
    assert px.shape == (3, 384, 512) and torch.allclose(px, torch.ones_like(px))
    red = src["img1.png"]["pixel_values"]
    assert red.shape == (3, 640, 192)
    assert red[0].mean().item() == pytest.approx(1.0) and red[1].mean().item() == pytest.approx(-1.0)
    assert src["img2"]["pixel_values"].shape == (3, 128, 640)  # found in a sub-folder
    assert src.image_wh("img2") == (1000.0, 200.0)
    with pytest.raises(KeyError, match=r"'img9' is not in .*imgs"):
        src["img9"]


def test_multi_source(tmp_path):
    a = write_h5(tmp_path / "a.h5", {"x": (1, 10, 10)})
    b = write_tsv(tmp_path / "b.tsv", {"y": (2, 10, 10)})
    src = open_image_source([str(a), str(b)])
    assert isinstance(src, MultiSource) and src["y"]["img_feat"].shape == (2, DIM) and "x" in src
    with pytest.raises(KeyError, match=r"'z' is in none of .*a\.h5, .*b\.tsv"):
        src["z"]


# --------------------------------------------------------------------------------------------------- collators
def _ex(n_tok, regions=None, hw=None):
    ex = {"input_ids": torch.arange(1, n_tok + 1)}
    if regions is not None:
        ex.update(img_feat=torch.ones(regions, 4), img_pos_feat=torch.ones(regions, 7))
    if hw is not None:
        ex["pixel_values"] = torch.ones(3, *hw)
    return ex


def test_batch_collator_pads_pixels_and_extras():
    exs = [_ex(3, hw=(32, 64)), _ex(2, hw=(64, 32))]
    exs[0].update(token_type_ids=torch.tensor([0, 1, 1]), mlm_labels=torch.tensor([-100, 5, -100]))
    exs[1].update(token_type_ids=torch.tensor([0, 0]), mlm_labels=torch.tensor([7, -100]))
    b = VLBatchCollator()(exs)
    assert b["pixel_values"].shape == (2, 3, 64, 64) and b["pixel_mask"].shape == (2, 64, 64)
    assert b["pixel_mask"][0, :32].all() and not b["pixel_mask"][0, 32:].any() and not b["pixel_mask"][1, :, 32:].any()
    assert b["token_type_ids"].tolist() == [[0, 1, 1], [0, 0, 0]]
    assert b["mlm_labels"].tolist() == [[-100, 5, -100], [7, -100, -100]]
    x, m = pad_images([torch.ones(3, 2, 2)], [torch.tensor([[1, 0], [1, 0]])])
    assert m.tolist() == [[[1, 0], [1, 0]]]


def test_pair_and_multiple_choice_collators():
    recs = [
        {"pair": [_ex(2, 1), _ex(2, 2)], "labels": torch.tensor(1), "identifier": "a"},
        {"pair": [_ex(3, 3), _ex(1, 1)], "labels": torch.tensor(0), "identifier": "b"},
    ]
    b = PairCollator()(recs)
    assert b["input_ids"].shape == (4, 3) and b["img_attention_mask"].sum(1).tolist() == [1, 3, 2, 1]
    assert b["labels"].tolist() == [1, 0] and b["identifier"] == ["a", "b"]
    mc = [{"qa": [_ex(k + 1, 2) for k in range(4)], "qar": [_ex(2, 2)] * 4, "answer_label": 2, "rationale_label": 3}]
    b = MultipleChoiceCollator()(mc * 3)
    assert b["qa"]["input_ids"].shape == (12, 4) and b["qar"]["img_feat"].shape == (12, 2, 4)
    assert b["answer_label"].tolist() == [2, 2, 2] and b["rationale_label"].tolist() == [3, 3, 3]
    assert b["num_choices"] == 4
    with pytest.raises(ValueError, match="record 0 has 1 examples"):
        PairCollator()([{"pair": [_ex(1)], "labels": 0}])


def test_hdf5_nested_ids(tmp_path):
    src = HDF5Features(write_h5(tmp_path / "vcr.h5", {"movie/clip@0.jpg": (2, 10, 10), "top": (1, 10, 10)}))
    assert sorted(src.keys()) == ["movie/clip@0.jpg", "top"] and len(src) == 2
    assert "movie/clip@0.jpg" in src and src["movie/clip@0.jpg"]["img_feat"].shape == (2, DIM)
