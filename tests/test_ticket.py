"""Tests for lightning_tickets.ticket: file format, errors, apply, overlap."""

from __future__ import annotations

import binascii
import json
import os
import struct
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lightning_tickets import ticket as ticket_mod
from lightning_tickets.__about__ import __version__
from lightning_tickets.bits import pack_bits
from lightning_tickets.ticket import FORMAT_VERSION, METADATA_KEY, Ticket, TicketError


def _random_mask(shape, keep=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) < keep


@pytest.fixture
def ticket() -> Ticket:
    masks = {
        "encoder.layer.0.weight": _random_mask((3, 5), seed=1),  # 15 bits: padding matters
        "encoder.layer.1.weight": _random_mask((7, 9, 2), seed=2),
        "head.weight": _random_mask((4, 8), seed=3),  # exactly 4 bytes
        "head.bias": _random_mask((1,), seed=4),
    }
    meta = {"round": 2, "score": 0.81, "dense_score": 0.83, "schedule": [0.2, 0.36], "rewind": "step_1000"}
    return Ticket(masks, meta)


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(5, 3)
        self.fc2 = torch.nn.Linear(3, 4)


class Wrapped(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = Net()


def _net_ticket(seed: int = 0) -> Ticket:
    return Ticket({"fc1.weight": _random_mask((3, 5), 0.5, seed), "fc2.weight": _random_mask((4, 3), 0.5, seed + 1)})


def _rewrite_header(src, dst, mutate) -> None:
    """Copy a ticket file, changing its decoded metadata JSON with ``mutate(info)`` (and tensors via info['_t'])."""
    with safe_open(str(src), framework="pt") as f:
        info = json.loads(f.metadata()[METADATA_KEY])
        tensors = {n: f.get_tensor(n) for n in f.keys()}
    info["_t"] = tensors
    mutate(info)
    tensors = info.pop("_t")
    save_file(tensors, str(dst), metadata={METADATA_KEY: json.dumps(info)})


# ---------------------------------------------------------------------------- construction / stats


def test_stats_and_repr():
    t = Ticket({"a": torch.tensor([[True, False, False], [False, False, True]]), "b": torch.ones(4, dtype=torch.bool)})
    assert t.num_weights == 10 and t.num_pruned == 4
    assert t.sparsity == pytest.approx(0.4)
    assert t.tensor_sparsity() == {"a": pytest.approx(4 / 6), "b": 0.0}
    assert t.profile()[0] == {"name": "a", "shape": [2, 3], "numel": 6, "kept": 2, "sparsity": pytest.approx(4 / 6)}
    assert repr(t) == "Ticket(tensors=2, weights=10, sparsity=0.4000)"
    assert "round=5" in repr(Ticket(t.masks, {"round": 5}))
    assert t.format_version == FORMAT_VERSION and t.library_version == __version__


def test_masks_are_copied_to_cpu_and_order_kept():
    src = torch.tensor([True, False])
    t = Ticket({"z": src, "a": src})
    src[0] = False
    assert t.masks["z"].tolist() == [True, False]
    assert list(t.masks) == ["z", "a"]


def test_constructor_validation():
    with pytest.raises(TicketError, match="at least one mask"):
        Ticket({})
    with pytest.raises(TicketError, match=r"'w' must be a bool tensor, got torch.float32.*mask != 0"):
        Ticket({"w": torch.ones(3)})
    with pytest.raises(TicketError, match=r"\['sparsity'\] are reserved"):
        Ticket({"w": torch.ones(3, dtype=torch.bool)}, {"sparsity": 0.5})


def test_from_model():
    net = Net()
    with torch.no_grad():
        net.fc1.weight[0, :2] = 0
    t = Ticket.from_model(net)
    assert list(t.masks) == ["fc1.weight", "fc2.weight"]  # dim >= 2 only
    assert t.num_pruned == 2
    assert list(Ticket.from_model(net, names=["fc1.bias"]).masks) == ["fc1.bias"]
    with pytest.raises(TicketError, match=r"no parameter\(s\) 'nope'.*'fc1.weight'"):
        Ticket.from_model(net, names=["nope"])


# ---------------------------------------------------------------------------- save / load


def test_round_trip(tmp_path, ticket):
    path = ticket.save(tmp_path / "sub" / "dir" / "t.safetensors")  # parent dirs created
    loaded = Ticket.load(path)
    assert list(loaded.masks) == list(ticket.masks)
    for name, mask in ticket.masks.items():
        assert loaded.masks[name].dtype == torch.bool
        assert torch.equal(loaded.masks[name], mask), name
    assert loaded.metadata == ticket.metadata
    assert loaded.sparsity == ticket.sparsity
    assert loaded.tensor_sparsity() == ticket.tensor_sparsity()
    assert loaded.format_version == FORMAT_VERSION and loaded.library_version == __version__


def test_file_layout_is_plain_safetensors(tmp_path, ticket):
    path = ticket.save(tmp_path / "t.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        assert list(meta) == [METADATA_KEY]
        info = json.loads(meta[METADATA_KEY])
        packed = f.get_tensor("encoder.layer.0.weight")
    assert packed.dtype == torch.uint8 and packed.shape == (2,)
    assert torch.equal(packed, pack_bits(ticket.masks["encoder.layer.0.weight"]))
    assert info["format_version"] == 2 == FORMAT_VERSION and info["library_version"] == __version__
    assert info["sparsity"] == ticket.sparsity and info["round"] == 2 and info["rewind"] == "step_1000"
    # format 2: CRC-32 of the packed bytes followed by "\n<name>\n<dims joined by ','>" (binascii as the oracle)
    crc = binascii.crc32(packed.numpy().tobytes() + b"\nencoder.layer.0.weight\n3,5")
    assert info["tensors"][0] == {
        "name": "encoder.layer.0.weight",
        "shape": [3, 5],
        "sparsity": ticket.tensor_sparsity()["encoder.layer.0.weight"],
        "numel": 15,
        "crc32": crc,
    }


def test_file_is_about_one_bit_per_weight(tmp_path):
    t = Ticket({"w": _random_mask((1000, 1000), 0.5)})
    path = t.save(tmp_path / "big.safetensors")
    assert os.path.getsize(path) / 1_000_000 < 0.13


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, ticket, monkeypatch):
    path = tmp_path / "t.safetensors"
    ticket.save(path)
    ticket.save(path)  # overwrite works
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    other = Ticket({"x": torch.zeros(10, dtype=torch.bool)})
    monkeypatch.setattr(ticket_mod.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        other.save(path)
    assert path.read_bytes() == before  # old file intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]  # temp file cleaned up
    monkeypatch.undo()
    assert list(Ticket.load(path).masks) == list(ticket.masks)


def test_save_rejects_non_json_metadata(tmp_path):
    t = Ticket({"w": torch.ones(2, dtype=torch.bool)}, {"bad": object()})
    with pytest.raises(TicketError, match="not JSON-serialisable"):
        t.save(tmp_path / "t.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_load_missing_file(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(TicketError, match=r"nope\.safetensors.*does not exist.*check the path"):
        Ticket.load(missing)


def test_load_truncated_file(tmp_path, ticket):
    path = ticket.save(tmp_path / "t.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[:-5])
    with pytest.raises(TicketError, match=r"t\.safetensors.*truncated or corrupt.*re-save"):
        Ticket.load(path)
    path.write_bytes(data[:20])  # cut inside the header
    with pytest.raises(TicketError, match="truncated or corrupt"):
        Ticket.load(path)


def test_load_corrupt_header(tmp_path, ticket):
    path = ticket.save(tmp_path / "t.safetensors")
    data = bytearray(path.read_bytes())
    data[10:30] = b"\xff" * 20  # garbage inside the JSON header
    path.write_bytes(bytes(data))
    with pytest.raises(TicketError, match="truncated or corrupt"):
        Ticket.load(path)
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(TicketError, match="truncated or corrupt"):
        Ticket.load(path)


def test_load_corrupt_mask_bytes_detected_by_recorded_sparsity(tmp_path):
    t = Ticket({"w": torch.zeros(64, dtype=torch.bool)})
    path = t.save(tmp_path / "t.safetensors")
    data = bytearray(path.read_bytes())
    (header_len,) = struct.unpack("<Q", data[:8])
    data[8 + header_len] = 0xFF  # flip the first data byte
    path.write_bytes(bytes(data))
    with pytest.raises(TicketError, match=r"'w' has sparsity 0\.875000 but the metadata records 1\.000000.*corrupt"):
        Ticket.load(path)


def test_load_plain_safetensors_is_not_a_ticket(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(3)}, str(path), metadata={"format": "pt"})
    with pytest.raises(TicketError, match=r"model\.safetensors.*not a lightning-tickets ticket.*Ticket\.from_model"):
        Ticket.load(path)


def test_load_newer_format_version(tmp_path, ticket):
    good = ticket.save(tmp_path / "t.safetensors")

    def future(info):
        info["format_version"] = 99
        info["library_version"] = "9.9.9"

    _rewrite_header(good, tmp_path / "future.safetensors", future)
    with pytest.raises(TicketError, match=r"format 99, written by lightning-tickets 9\.9\.9.*pip install -U"):
        Ticket.load(tmp_path / "future.safetensors")


def test_load_listed_tensor_absent(tmp_path, ticket):
    good = ticket.save(tmp_path / "t.safetensors")
    _rewrite_header(good, tmp_path / "bad.safetensors", lambda info: info["_t"].pop("head.weight"))
    with pytest.raises(TicketError, match=r"bad\.safetensors.*'head\.weight'.*absent"):
        Ticket.load(tmp_path / "bad.safetensors")


def test_load_byte_count_mismatch(tmp_path, ticket):
    good = ticket.save(tmp_path / "t.safetensors")

    def grow(info):
        info["tensors"][2]["shape"] = [4, 9]  # head.weight: 36 bits need 5 bytes, file holds 4
        info["tensors"][2]["numel"] = 36  # (a numel that disagrees with the shape is refused before this check)

    _rewrite_header(good, tmp_path / "bad.safetensors", grow)
    match = r"'head\.weight' does not match its recorded shape \[4, 9\].*needs exactly 5"
    with pytest.raises(TicketError, match=match):
        Ticket.load(tmp_path / "bad.safetensors")


# ---------------------------------------------------------------------------- apply


def test_apply_zeroes_exactly_pruned_entries():
    net = Net()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    t = _net_ticket()
    out = t.apply(net)
    assert set(out) == {"fc1.weight", "fc2.weight"}
    for name, mask in t.masks.items():
        p = dict(net.named_parameters())[name].detach()
        assert torch.equal(out[name], mask)
        assert torch.all(p[~mask] == 0)
        assert torch.equal(p[mask], before[name][mask])  # kept entries untouched
    assert torch.equal(net.fc1.bias, before["fc1.bias"])  # not in ticket: untouched
    assert net.fc1.weight.requires_grad


def test_apply_with_prefix_and_remap():
    t = Ticket({"model.fc1.weight": _random_mask((3, 5), 0.5), "model.fc2.weight": _random_mask((4, 3), 0.5, 1)})
    net = Wrapped()
    out = t.apply(net, remap={"model.": ""}, prefix="backbone.")
    assert set(out) == {"backbone.fc1.weight", "backbone.fc2.weight"}
    assert torch.all(net.backbone.fc1.weight[~t.masks["model.fc1.weight"]] == 0)

    # longest matching remap key wins; "" strips
    net2 = Wrapped()
    remap = {"model.": "wrong.", "model.fc1.": "backbone.fc1.", "model.fc2.": "backbone.fc2."}
    assert set(t.apply(net2, remap=remap)) == {"backbone.fc1.weight", "backbone.fc2.weight"}


def test_apply_strict_missing_names_message():
    t = _net_ticket()
    with pytest.raises(TicketError) as exc:
        t.apply(Wrapped())
    msg = str(exc.value)
    assert "2 of 2 ticket tensor(s) have no matching parameter in Wrapped" in msg
    assert "'fc1.weight'" in msg and "'fc2.weight'" in msg
    assert "'backbone.fc1.weight'" in msg  # some model parameter names
    assert "prefix='backbone.'" in msg  # concrete hint
    assert "remap=" in msg and "strict=False" in msg


def test_apply_missing_name_hint_for_remap_and_list_limit():
    masks = {f"model.layer{i}.weight": torch.ones(2, dtype=torch.bool) for i in range(12)}
    masks["model.fc1.weight"] = torch.ones(3, 5, dtype=torch.bool)
    with pytest.raises(TicketError) as exc:
        Ticket(masks).apply(Net())
    msg = str(exc.value)
    assert "13 of 13" in msg and "(3 more)" in msg  # at most 10 names listed


def test_apply_remap_hint():
    t = Ticket({"model.fc1.weight": torch.ones(3, 5, dtype=torch.bool)})
    with pytest.raises(TicketError, match=r"try remap=\{'model\.': ''\}"):
        t.apply(Net())


def test_apply_non_strict_skips_with_warning():
    t = Ticket({"fc1.weight": _random_mask((3, 5), 0.5), "extra.weight": torch.ones(2, dtype=torch.bool)})
    net = Net()
    with pytest.warns(UserWarning, match=r"skipped 1 ticket tensor\(s\).*'extra\.weight'"):
        out = t.apply(net, strict=False)
    assert set(out) == {"fc1.weight"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _net_ticket().apply(Net(), strict=False)  # nothing missing -> no warning


def test_apply_shape_mismatch_is_error_even_non_strict():
    t = Ticket({"fc1.weight": torch.ones(5, 3, dtype=torch.bool), "fc2.weight": torch.zeros(4, 3, dtype=torch.bool)})
    net = Net()
    before = net.fc2.weight.detach().clone()
    for strict in (True, False):
        with pytest.raises(TicketError, match=r"'fc1\.weight'.*ticket shape \[5, 3\], parameter shape \[3, 5\]"):
            t.apply(net, strict=strict)
    assert torch.equal(net.fc2.weight, before)  # nothing applied when validation fails


def test_apply_two_names_onto_one_parameter():
    t = Ticket({"a.weight": torch.ones(3, 5, dtype=torch.bool), "b.weight": torch.ones(3, 5, dtype=torch.bool)})
    with pytest.raises(TicketError, match=r"'a\.weight' and 'b\.weight' both map to parameter 'fc1\.weight'"):
        t.apply(Net(), remap={"a.": "fc1.", "b.": "fc1."})


# ---------------------------------------------------------------------------- overlap


def test_overlap_hand_computed():
    y = torch.tensor([[1, 0], [1, 1]], dtype=torch.bool)
    a = Ticket({"x": torch.tensor([1, 1, 0, 0], dtype=torch.bool), "y": y})
    b = Ticket({"x": torch.tensor([1, 0, 1, 0], dtype=torch.bool), "y": y})
    ov = a.overlap(b)
    # x: inter 1, union 3; y: inter 3, union 3; global (1 + 3) / (3 + 3)
    assert ov["per_tensor"] == {"x": pytest.approx(1 / 3), "y": 1.0}
    assert ov["global"] == pytest.approx(4 / 6)
    assert a.overlap(a)["global"] == 1.0
    empty = Ticket({"x": torch.zeros(4, dtype=torch.bool)})
    assert empty.overlap(empty) == {"global": 1.0, "per_tensor": {"x": 1.0}}


def test_overlap_differing_tensors():
    a = Ticket({"x": torch.ones(4, dtype=torch.bool), "y": torch.ones(2, 2, dtype=torch.bool)})
    b = Ticket({"x": torch.ones(4, dtype=torch.bool), "y": torch.ones(4, dtype=torch.bool), "z": torch.ones(1).bool()})
    with pytest.raises(TicketError) as exc:
        a.overlap(b)
    msg = str(exc.value)
    assert "only in the other ticket: 'z'" in msg
    assert "'y': [2, 2] vs [4]" in msg
    assert "only in this ticket" not in msg
    with pytest.raises(TicketError, match="only in this ticket: 'z'.*same model"):
        b.overlap(Ticket({"x": torch.ones(4, dtype=torch.bool), "y": torch.ones(4, dtype=torch.bool)}))
