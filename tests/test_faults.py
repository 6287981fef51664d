"""Fault tolerance and hostile inputs (issue 15): kills during writes, corrupt tickets, pickles, odd files.

* kill-during-write: ``tests/fault_writer.py`` SIGKILLs a process rewriting a ticket, a ``summary.json`` or a
  ``ticket apply`` output at random moments; every file left must be a complete copy of the previous or the new
  version (hidden ``.NAME.*.tmp`` leftovers aside). 10 trials per kind here, 60 with ``--runslow``.
* a matrix of corrupt tickets (truncations, bit flips, edited metadata): each must raise ``TicketError``.
* checkpoints that need a full unpickle are refused (the code in them does not run) unless the caller opts in.
* ``ticket apply`` refuses to overwrite its inputs; FIFOs and corrupt summaries give one-line errors; files written
  by the library get the umask-derived mode.
"""

from __future__ import annotations

import copy
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_tickets.baselines import load_weights
from lightning_tickets.fileio import UnsafeCheckpointError
from lightning_tickets.report import write_json_atomic
from lightning_tickets.ticket import METADATA_KEY, Ticket, TicketError
from lightning_tickets.tools import main

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
import fault_writer  # noqa: E402


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


# ---------------------------------------------------------------------------- kill during write


def _expected(kind: str, version: str):
    if kind == "ticket":
        return fault_writer.masks(version)
    if kind == "summary":
        return fault_writer.summary(version)
    masks, sd = fault_writer.masks(version), fault_writer.checkpoint()
    return {n: t.masked_fill(~masks[n], 0) for n, t in sd.items()}


def _read(kind: str, path: Path):
    if kind == "ticket":
        return Ticket.load(path).masks
    if kind == "summary":
        return json.loads(path.read_text())
    return torch.load(path, map_location="cpu", weights_only=True)


def _same(kind: str, got, want) -> bool:
    if kind == "summary":
        return got == want
    return list(got) == list(want) and all(torch.equal(got[n], want[n]) for n in want)


def _kill_trials(root: Path, kind: str, trials: int, seed: int) -> None:
    cmd = [sys.executable, str(TESTS / "fault_writer.py"), kind, str(root), str(trials), str(seed)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["trials"] == trials
    target = fault_writer.TARGETS[kind]
    versions = {v: _expected(kind, v) for v in "AB"}
    for v in "AB":  # the oracle itself: the uninterrupted writes
        assert _same(kind, _read(kind, root / f"ref-{v}{Path(target).suffix}"), versions[v])
    seen = set()
    for i in range(trials):
        d = root / f"trial-{i}"
        names = sorted(p.name for p in d.iterdir())
        leftovers = [n for n in names if n != target]
        assert target in names, f"trial {i}: {target} vanished ({names})"  # the previous version survives
        assert all(n.startswith(f".{target}.") and n.endswith(".tmp") for n in leftovers), (i, leftovers)
        got = _read(kind, d / target)
        match = [v for v in "AB" if _same(kind, got, versions[v])]
        assert match, f"trial {i}: {target} is neither the previous nor the new version"
        seen.add(match[0])


@pytest.mark.parametrize("kind", ["ticket", "summary", "apply"])
def test_sigkill_during_write_leaves_previous_or_new_file(tmp_path, kind):
    _kill_trials(tmp_path, kind, trials=10, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ticket", "summary", "apply"])
def test_sigkill_during_write_many_trials(tmp_path, kind):
    _kill_trials(tmp_path, kind, trials=60, seed=1)


def test_written_files_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        t = Ticket({"w": torch.ones(3, dtype=torch.bool)}).save(tmp_path / "t.safetensors")
        s = write_json_atomic(tmp_path / "summary.json", {"rounds": []})
        os.umask(0o077)
        private = write_json_atomic(tmp_path / "private.json", {})
    finally:
        os.umask(old)
    assert (t.stat().st_mode & 0o777, s.stat().st_mode & 0o777) == (0o644, 0o644)  # summary: same mode as tickets
    assert private.stat().st_mode & 0o777 == 0o600


# ---------------------------------------------------------------------------- corrupt tickets

MATRIX_SHAPES = {"a.weight": (4, 8), "b.weight": (3, 5), "c.weight": (2, 3, 4), "d.weight": (4, 8), "e.bias": (5,)}


@pytest.fixture(scope="module")
def good_ticket(tmp_path_factory) -> Path:
    g = torch.Generator().manual_seed(0)
    masks = {n: torch.rand(s, generator=g) < 0.5 for n, s in MATRIX_SHAPES.items()}
    return Ticket(masks, {"round": 3}).save(tmp_path_factory.mktemp("good") / "good.safetensors")


def _split(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _join(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * ((-len(raw)) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def _edit_meta(fn):
    """A corruption that edits the decoded ticket metadata (``fn(info)``) and rewrites the safetensors header."""

    def corrupt(data: bytes) -> bytes:
        header, body = _split(data)
        info = json.loads(header["__metadata__"][METADATA_KEY])
        fn(info)
        header["__metadata__"][METADATA_KEY] = json.dumps(info)  # NaN stays NaN (json allows it)
        return _join(header, body)

    return corrupt


def _entry(tensor: str, **changes):
    def fn(info):
        e = next(e for e in info["tensors"] if e["name"] == tensor)
        for k, v in changes.items():
            if v is KeyError:
                del e[k]
            else:
                e[k] = v

    return _edit_meta(fn)


def _flip_bit(name: str, bit: int):
    """Flip bit ``bit`` (MSB-first numbering, as packed) of tensor ``name``'s packed bytes."""

    def corrupt(data: bytes) -> bytes:
        header, _ = _split(data)
        start = len(data) - len(_split(data)[1]) + header[name]["data_offsets"][0]
        out = bytearray(data)
        out[start + bit // 8] ^= 0x80 >> (bit % 8)
        return bytes(out)

    return corrupt


def _swap_bits_keeping_count(name: str):
    """Move one kept weight to a pruned position inside the first byte of ``name``: the count of ones is unchanged."""

    def corrupt(data: bytes) -> bytes:
        header, _ = _split(data)
        start = len(data) - len(_split(data)[1]) + header[name]["data_offsets"][0]
        out = bytearray(data)
        byte = out[start]
        assert byte not in (0, 255), "the fixture's first byte needs a kept and a pruned weight"
        one = next(b for b in range(8) if byte & (0x80 >> b))
        zero = next(b for b in range(8) if not byte & (0x80 >> b))
        out[start] = byte ^ (0x80 >> one) ^ (0x80 >> zero)
        return bytes(out)

    return corrupt


def _st_header(fn):
    """A corruption of the safetensors header itself (tensor names / dtypes), metadata untouched."""

    def corrupt(data: bytes) -> bytes:
        header, body = _split(data)
        fn(header)
        return _join(header, body)

    return corrupt


def _swap_keys(header):
    header["a.weight"], header["d.weight"] = header["d.weight"], header["a.weight"]


def _truncate(n: int | None = None, header_cut: int = 0):
    def corrupt(data: bytes) -> bytes:
        if n is not None:
            return data[:n]
        (hl,) = struct.unpack("<Q", data[:8])
        return data[: 8 + hl + header_cut]

    return corrupt


CORRUPTIONS = {
    # truncations
    "truncated-empty": _truncate(0),
    "truncated-in-length": _truncate(5),
    "truncated-in-header": _truncate(40),
    "truncated-end-of-header": _truncate(header_cut=0),
    "truncated-in-data": _truncate(header_cut=3),
    "truncated-last-byte": lambda d: d[:-1],
    # bit flips in the packed masks
    "flip-a-bit-0": _flip_bit("a.weight", 0),
    "flip-a-bit-31": _flip_bit("a.weight", 31),
    "flip-b-bit-14": _flip_bit("b.weight", 14),
    "flip-b-padding-bit": _flip_bit("b.weight", 15),  # bit 16 of a 15-weight mask: padding
    "flip-c-bit-23": _flip_bit("c.weight", 23),
    "flip-e-padding-bit": _flip_bit("e.bias", 7),
    "swap-bits-same-count": _swap_bits_keeping_count("a.weight"),
    # metadata edits
    "dropped-entries": _edit_meta(lambda i: i.update(tensors=i["tensors"][:1])),
    "dropped-one-entry": _edit_meta(lambda i: i["tensors"].pop(2)),
    "transposed-shape": _entry("a.weight", shape=[8, 4]),
    "flattened-shape": _entry("a.weight", shape=[32]),
    "reshaped-3d": _entry("c.weight", shape=[4, 3, 2]),
    "negative-shape": _entry("a.weight", shape=[-4, -8]),
    "shape-string": _entry("a.weight", shape="4x8"),
    "shape-bool": _entry("e.bias", shape=[True, 5]),
    "shape-float": _entry("a.weight", shape=[4.0, 8]),
    "numel-mismatch": _entry("a.weight", numel=31),
    "nan-sparsity": _entry("a.weight", sparsity=math.nan),
    "missing-sparsity": _entry("a.weight", sparsity=KeyError),
    "sparsity-above-one": _entry("a.weight", sparsity=1.5),
    "sparsity-negative": _entry("a.weight", sparsity=-0.1),
    "sparsity-string": _entry("a.weight", sparsity="0.5"),
    "sparsity-wrong": _entry("c.weight", sparsity=0.0),
    "global-sparsity-nan": _edit_meta(lambda i: i.update(sparsity=math.nan)),
    "global-sparsity-missing": _edit_meta(lambda i: i.pop("sparsity")),
    "global-sparsity-wrong": _edit_meta(lambda i: i.update(sparsity=0.99)),
    "duplicate-entry": _edit_meta(lambda i: i["tensors"].append(copy.deepcopy(i["tensors"][0]))),
    "renamed-entry": _entry("a.weight", name="z.weight"),
    "empty-name": _entry("a.weight", name=""),
    "entry-not-object": _edit_meta(lambda i: i["tensors"].__setitem__(1, 5)),
    "no-tensors": _edit_meta(lambda i: i.update(tensors=[])),
    "format-version-minus-5": _edit_meta(lambda i: i.update(format_version=-5)),
    "format-version-true": _edit_meta(lambda i: i.update(format_version=True)),
    "format-version-zero": _edit_meta(lambda i: i.update(format_version=0)),
    "format-version-string": _edit_meta(lambda i: i.update(format_version="2")),
    "format-version-float": _edit_meta(lambda i: i.update(format_version=2.0)),
    "format-version-missing": _edit_meta(lambda i: i.pop("format_version")),
    "format-version-future": _edit_meta(lambda i: i.update(format_version=99)),
    "library-version-int": _edit_meta(lambda i: i.update(library_version=3)),
    "checksum-mismatch": _entry("c.weight", crc32=12345),
    "checksum-missing": _entry("c.weight", crc32=KeyError),
    "checksum-negative": _entry("c.weight", crc32=-1),
    "checksum-string": _entry("c.weight", crc32="abc"),
    "metadata-not-json": _st_header(lambda h: h["__metadata__"].update({METADATA_KEY: "{not json"})),
    "metadata-missing": _st_header(lambda h: h["__metadata__"].pop(METADATA_KEY)),
    "tensors-swapped-in-file": _st_header(_swap_keys),
    "tensor-dtype-int8": _st_header(lambda h: h["a.weight"].update(dtype="I8")),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_ticket_raises_ticket_error(tmp_path, good_ticket, case):
    data = good_ticket.read_bytes()
    Ticket.load(good_ticket)  # the untouched file loads
    bad = tmp_path / f"{case}.safetensors"
    bad.write_bytes(CORRUPTIONS[case](data))
    assert bad.read_bytes() != data
    with pytest.raises(TicketError) as exc:
        Ticket.load(bad)
    assert f"{case}.safetensors" in str(exc.value)  # names the file


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("dropped-entries", ["'b.weight'", "does not list", "re-save"]),
        ("transposed-shape", ["'a.weight'", "crc32", "re-save"]),
        ("negative-shape", ["'a.weight'", "[-4, -8]", "non-negative"]),
        ("nan-sparsity", ["'a.weight'", "nan", "[0, 1]"]),
        ("duplicate-entry", ["'a.weight'", "listed twice"]),
        ("format-version-true", ["format_version True", "not an integer"]),
        ("format-version-minus-5", ["format_version -5", "valid versions are 1 to 2"]),
        ("checksum-mismatch", ["'c.weight'", "crc32"]),
        ("swap-bits-same-count", ["'a.weight'", "crc32"]),
    ],
)
def test_corrupt_ticket_message_names_tensor_and_fix(tmp_path, good_ticket, case, words):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(CORRUPTIONS[case](good_ticket.read_bytes()))
    with pytest.raises(TicketError) as exc:
        Ticket.load(bad)
    for w in words:
        assert w in str(exc.value), (w, str(exc.value))


def _as_format_1(data: bytes) -> bytes:
    """The file as format 1 wrote it: no crc32 entries."""

    def downgrade(info):
        info["format_version"] = 1
        for e in info["tensors"]:
            del e["crc32"]

    return _edit_meta(downgrade)(data)


def test_format_1_ticket_still_loads_without_checksum(tmp_path, good_ticket):
    old = tmp_path / "old.safetensors"
    old.write_bytes(_as_format_1(good_ticket.read_bytes()))
    t, ref = Ticket.load(old), Ticket.load(good_ticket)
    assert t.format_version == 1 and ref.format_version == 2
    assert all(torch.equal(t.masks[n], ref.masks[n]) for n in ref.masks) and t.metadata == {"round": 3}
    bad = tmp_path / "old-nan.safetensors"  # format 1 files get every other check
    bad.write_bytes(_entry("a.weight", sparsity=math.nan)(old.read_bytes()))
    with pytest.raises(TicketError, match="finite number"):
        Ticket.load(bad)


def test_transposed_shape_in_unchecksummed_ticket_is_refused_when_applied(tmp_path, good_ticket):
    """Format 1 has no checksum to catch an edited shape; applying it to the model still refuses the mismatch."""
    old = tmp_path / "old.safetensors"
    old.write_bytes(_entry("a.weight", shape=[8, 4])(_as_format_1(good_ticket.read_bytes())))
    t = Ticket.load(old)
    assert t.masks["a.weight"].shape == (8, 4)
    model = torch.nn.ModuleDict({"a": torch.nn.Linear(8, 4, bias=False)})
    with pytest.raises(TicketError, match=r"ticket shape \[8, 4\], parameter shape \[4, 8\]"):
        Ticket({"a.weight": t.masks["a.weight"]}).apply(model)
    torch.save({"a.weight": torch.ones(4, 8)}, tmp_path / "w.pt")
    Ticket({"a.weight": t.masks["a.weight"]}).save(tmp_path / "t.safetensors")
    assert main(["apply", str(tmp_path / "t.safetensors"), str(tmp_path / "w.pt"), str(tmp_path / "o.pt")]) == 2
    assert not (tmp_path / "o.pt").exists()


# ---------------------------------------------------------------------------- no code from user files


class _Planted:
    """Unpickles by evaluating code that writes a marker file and returns a state dict."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        code = f"(open({self.marker!r}, 'w').write('ran'), {{'fc.weight': __import__('torch').ones(4, 8)}})[1]"
        return (eval, (code,))


@pytest.fixture
def planted(tmp_path):
    marker = tmp_path / "MARKER"
    torch.save(_Planted(marker), tmp_path / "evil.pt")
    torch.save({"state_dict": {"fc.weight": torch.ones(4, 8)}, "extra": _Planted(marker)}, tmp_path / "evil.ckpt")
    Ticket({"fc.weight": torch.rand(4, 8) < 0.5}).save(tmp_path / "t.safetensors")
    return tmp_path, marker


@pytest.mark.parametrize("ckpt", ["evil.pt", "evil.ckpt"])
def test_ticket_apply_refuses_pickled_code(planted, capsys, ckpt):
    d, marker = planted
    args = ["apply", str(d / "t.safetensors"), str(d / ckpt), str(d / "out.safetensors")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ckpt in err and "--trust-checkpoint" in err, err
    assert not marker.exists() and not (d / "out.safetensors").exists()
    assert main([*args, "--trust-checkpoint"]) == 0  # the explicit opt-in loads it (and runs its code)
    assert marker.exists() and (d / "out.safetensors").exists()


def test_load_weights_refuses_pickled_code(planted):
    d, marker = planted
    model = torch.nn.ModuleDict({"fc": torch.nn.Linear(8, 4, bias=False)})
    with pytest.raises(UnsafeCheckpointError, match="trust_checkpoint=True"):
        load_weights(model, d / "evil.pt")
    assert not marker.exists()
    report = load_weights(model, d / "evil.pt", trust_checkpoint=True)
    assert report["matched"] == ["fc.weight"] and marker.exists()
    assert torch.equal(model["fc"].weight, torch.ones(4, 8))


def test_load_weights_plain_checkpoint_needs_no_opt_in(tmp_path):
    src, dst = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    torch.save({"state_dict": src.state_dict(), "epoch": 3, "hyper_parameters": {"lr": 0.1}}, tmp_path / "x.ckpt")
    assert load_weights(dst, tmp_path / "x.ckpt")["matched"] == ["weight", "bias"]
    assert torch.equal(dst.weight, src.weight)


# ---------------------------------------------------------------------------- ticket apply guards


@pytest.fixture
def apply_inputs(tmp_path):
    Ticket({"fc.weight": torch.rand(4, 8) < 0.5}).save(tmp_path / "t.safetensors")
    torch.save({"state_dict": {"fc.weight": torch.randn(4, 8)}}, tmp_path / "m.ckpt")
    return tmp_path


@pytest.mark.parametrize("out", ["t.safetensors", "m.ckpt", "link-to-ticket", "hardlink-to-ckpt", "sub/../m.ckpt"])
def test_ticket_apply_refuses_to_overwrite_an_input(apply_inputs, capsys, out):
    d = apply_inputs
    (d / "sub").mkdir()
    (d / "link-to-ticket").symlink_to(d / "t.safetensors")
    os.link(d / "m.ckpt", d / "hardlink-to-ckpt")
    before = {p: (d / p).read_bytes() for p in ("t.safetensors", "m.ckpt")}
    assert main(["apply", str(d / "t.safetensors"), str(d / "m.ckpt"), str(d / out)]) == 2
    err = capsys.readouterr().err
    assert "same file as the input" in err and "another output path" in err
    assert {p: (d / p).read_bytes() for p in before} == before


def test_ticket_apply_output_directory_is_refused(apply_inputs, capsys):
    d = apply_inputs
    assert main(["apply", str(d / "t.safetensors"), str(d / "m.ckpt"), str(d)]) == 2
    assert "is a directory" in capsys.readouterr().err


# ---------------------------------------------------------------------------- odd files for the CLI


def test_cli_on_fifo_gives_one_line_error_without_hanging(tmp_path, apply_inputs):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    script = (
        "import sys, json\nfrom lightning_tickets.tools import main\n"
        f"cases = [['info', {str(fifo)!r}], ['apply', {str(tmp_path / 't.safetensors')!r}, {str(fifo)!r}, "
        f"{str(tmp_path / 'o.pt')!r}], ['plot', {str(fifo)!r}, '--out', {str(tmp_path / 'p.png')!r}]]\n"
        "for c in cases:\n    print(json.dumps([c[0], main(c)]), flush=True)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True, text=True, timeout=120)
    assert [json.loads(line) for line in proc.stdout.splitlines()] == [["info", 2], ["apply", 2], ["plot", 2]]
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 3 and all("is not a regular file (it is a FIFO" in e for e in errors), errors


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{not json", "not valid JSON"),
        ('{"rounds": [{"sparsity": 0.5, "score": 0.9}]', "not valid JSON"),  # truncated
        ("[1, 2]", "no 'rounds' list"),
        ('{"rounds": [{"score": 0.9}]}', "no 'rounds' list"),
        ('{"rounds": [], "best_relaxed_ticket": {"round": 1}}', "no 'rounds' list"),
        ("\xff\xfe", "not valid JSON"),
    ],
)
def test_plot_corrupt_summary_gives_one_line_error(tmp_path, capsys, text, words):
    bad = tmp_path / "summary.json"
    bad.write_bytes(text.encode("latin-1"))
    assert main(["plot", str(bad), "--out", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: summary file") and words in err, err
    assert not (tmp_path / "p.png").exists()
