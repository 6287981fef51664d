"""The on-disk ticket format: building the JSON header, checksums, and reading + validating a ticket file.

A ticket file is a safetensors file with one bit-packed ``uint8`` tensor per mask and one header metadata key,
:data:`METADATA_KEY`, holding a JSON document (see ``docs/tickets.md``). Format 2 adds a per-tensor ``crc32``
(:func:`tensor_checksum`); format 1 files (no checksum) still load. :func:`read_ticket_file` checks every field and
raises :class:`TicketError` naming the file, the tensor and the fix.

Example:
    >>> import torch
    >>> from lightning_tickets.bits import pack_bits
    >>> tensor_checksum(pack_bits(torch.tensor([True, False, True])), "w", [3])
    3443097510
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lightning_tickets.__about__ import __version__
from lightning_tickets.bits import pack_bits, unpack_bits
from lightning_tickets.fileio import check_regular_file

__all__ = [
    "FORMAT_VERSION",
    "METADATA_KEY",
    "MIN_FORMAT_VERSION",
    "RESERVED",
    "TicketError",
    "build_header",
    "plain_name",
    "read_ticket_file",
    "tensor_checksum",
]

#: Name of the attribute through which ``torch.compile``'s ``OptimizedModule`` holds the module it wraps.
COMPILED_ATTR = "_orig_mod"


def plain_name(name: str) -> str:
    """The parameter name without ``torch.compile``'s ``_orig_mod.`` parts: tickets are written with, and matched
    on, the names of the plain (uncompiled) model.

    Example:
        >>> plain_name("encoder._orig_mod.layer.0.weight"), plain_name("_orig_mod.fc.weight")
        ('encoder.layer.0.weight', 'fc.weight')
    """
    return ".".join(part for part in name.split(".") if part != COMPILED_ATTR)


#: Version of the on-disk layout written by ``Ticket.save``; ``Ticket.load`` reads versions 1 to this one.
FORMAT_VERSION = 2
#: Oldest format version that can be read (format 1: no per-tensor checksum).
MIN_FORMAT_VERSION = 1
#: The one safetensors header metadata key that marks a file as a ticket.
METADATA_KEY = "lightning_tickets"
#: Top-level header keys owned by the format (user metadata cannot use them).
RESERVED = ("format_version", "library_version", "tensors", "sparsity")
_RESAVE = "the file is corrupt or was edited: re-save the ticket from its run (or re-download it)"


class TicketError(ValueError):
    """A ticket could not be built, saved, loaded, applied or compared; the message says what to do."""


def mask_sparsity(mask: torch.Tensor) -> float:
    """Fraction of ``False`` entries of a bool mask (0.0 for an empty mask)."""
    n = mask.numel()
    return (n - int(mask.count_nonzero())) / n if n else 0.0


def tensor_checksum(packed: torch.Tensor, name: str, shape: Sequence[int]) -> int:
    """CRC-32 (``zlib.crc32``) of a packed mask's bytes followed by ``"\\n" + name + "\\n" + dims joined by ","``.

    Covering the name and shape as well as the bytes means an edited shape (transposed, flattened) or a renamed
    tensor fails the check, not only a flipped bit.
    """
    crc = zlib.crc32(packed.contiguous().numpy().tobytes())
    return zlib.crc32(("\n" + name + "\n" + ",".join(str(int(d)) for d in shape)).encode("utf-8"), crc)


def build_header(masks: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> tuple[str, dict[str, torch.Tensor]]:
    """The JSON header string and the packed tensors of a ticket file (format :data:`FORMAT_VERSION`).

    Raises:
        TicketError: if the metadata is not JSON-serialisable.
    """
    packed = {n: pack_bits(m) for n, m in masks.items()}
    total = sum(m.numel() for m in masks.values())
    pruned = sum(m.numel() - int(m.count_nonzero()) for m in masks.values())
    header = {
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "tensors": [
            {
                "name": n,
                "shape": list(m.shape),
                "sparsity": mask_sparsity(m),
                "numel": m.numel(),
                "crc32": tensor_checksum(packed[n], n, list(m.shape)),
            }
            for n, m in masks.items()
        ],
        "sparsity": pruned / total if total else 0.0,
        **metadata,
    }
    try:
        text = json.dumps(header)
    except (TypeError, ValueError) as e:
        raise TicketError(f"ticket metadata is not JSON-serialisable ({e}); use plain numbers/strings/lists") from e
    return text, packed


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_fraction(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and 0.0 <= x <= 1.0


def _check_version(info: dict[str, Any], where: str) -> int:
    version = info.get("format_version")
    if not _is_int(version):
        raise TicketError(f"{where} has format_version {version!r}, which is not an integer; {_RESAVE}")
    if version > FORMAT_VERSION:
        raise TicketError(
            f"{where} uses ticket format {version}, written by lightning-tickets "
            f"{info.get('library_version', '?')}; this is lightning-tickets {__version__} (format "
            f"{FORMAT_VERSION}). Upgrade: pip install -U lightning-tickets"
        )
    if version < MIN_FORMAT_VERSION:
        raise TicketError(
            f"{where} has format_version {version}; valid versions are {MIN_FORMAT_VERSION} to {FORMAT_VERSION}; "
            f"{_RESAVE}"
        )
    if "library_version" in info and not isinstance(info["library_version"], str):
        raise TicketError(f"{where} has library_version {info['library_version']!r}, not a string; {_RESAVE}")
    return version


def _check_entry(entry: Any, where: str, version: int) -> tuple[str, list[int], int | None]:
    """Validate one ``tensors`` entry; return ``(name, shape, crc32 or None)``."""
    if not isinstance(entry, dict):
        raise TicketError(f"{where} has a tensor entry {entry!r} that is not an object; {_RESAVE}")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise TicketError(f"{where} has a tensor entry with name {name!r} (not a non-empty string); {_RESAVE}")
    tensor = f"{where}: tensor {name!r}"
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
        raise TicketError(f"{tensor} has shape {shape!r}; a shape is a list of non-negative integers; {_RESAVE}")
    numel = math.prod(shape)
    if not _is_int(entry.get("numel")) or entry["numel"] != numel:
        raise TicketError(
            f"{tensor} records numel {entry.get('numel')!r} but its shape {shape} has {numel} weights; {_RESAVE}"
        )
    if not _is_fraction(entry.get("sparsity")):
        raise TicketError(
            f"{tensor} records sparsity {entry.get('sparsity')!r}; it must be a finite number in [0, 1]; {_RESAVE}"
        )
    crc = entry.get("crc32")
    if version >= 2 and crc is None:
        raise TicketError(f"{tensor} has no crc32 checksum, which format {version} requires; {_RESAVE}")
    if crc is not None and not (_is_int(crc) and 0 <= crc < 2**32):
        raise TicketError(f"{tensor} has crc32 {crc!r}, not an unsigned 32-bit integer; {_RESAVE}")
    return name, shape, crc


def _check_mask(packed: torch.Tensor, entry: dict[str, Any], shape: list[int], crc: int | None, tensor: str):
    """Unpack one tensor and check its bytes against the recorded shape, padding, sparsity and checksum."""
    try:
        mask = unpack_bits(packed, shape)
    except ValueError as e:
        raise TicketError(f"{tensor} does not match its recorded shape {shape}: {e}; {_RESAVE}") from e
    spare = (-mask.numel()) % 8
    if spare and int(packed[-1]) & ((1 << spare) - 1):
        raise TicketError(f"{tensor} has non-zero padding bits in its last byte; {_RESAVE}")
    recorded = entry["sparsity"]
    if mask.numel() and abs(recorded - mask_sparsity(mask)) * mask.numel() > 0.5:
        raise TicketError(
            f"{tensor} has sparsity {mask_sparsity(mask):.6f} but the metadata records {recorded:.6f}; the mask "
            f"bytes are corrupt; {_RESAVE}"
        )
    if crc is not None and tensor_checksum(packed, entry["name"], shape) != crc:
        raise TicketError(
            f"{tensor} fails its crc32 checksum: the mask bytes, name or shape changed after it was saved; {_RESAVE}"
        )
    return mask


def _read_raw(path: Path, where: str) -> tuple[str, dict[str, torch.Tensor]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = (f.metadata() or {}).get(METADATA_KEY)
            if header is None:
                raise TicketError(
                    f"{where} is a safetensors file but not a lightning-tickets ticket (no {METADATA_KEY!r} "
                    "header metadata); build a ticket with Ticket(masks) or Ticket.from_model(model) and save it"
                )
            return header, {n: f.get_tensor(n) for n in f.keys()}
    except TicketError:
        raise
    except Exception as e:  # safetensors raises its own error type (and OSError) on truncated/corrupt files
        raise TicketError(f"{where} is truncated or corrupt ({e}); re-save or re-download it") from e


def read_ticket_file(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any], int]:
    """Read and validate a ticket file; return ``(masks, header info, format version)``.

    Raises:
        TicketError: if the file is missing, not a regular file, truncated or corrupt, not a ticket, of a newer
            format, or any metadata field is invalid or disagrees with the tensors (see ``docs/tickets.md``).
    """
    path = Path(path)
    where = f"ticket file {str(path)!r}"
    check_regular_file(path, "ticket file", TicketError)
    header, stored = _read_raw(path, where)
    try:
        info = json.loads(header)
    except ValueError as e:
        raise TicketError(f"{where} has unreadable {METADATA_KEY!r} metadata ({e}); {_RESAVE}") from e
    if not isinstance(info, dict) or not isinstance(info.get("tensors"), list):
        raise TicketError(f"{where} has malformed {METADATA_KEY!r} metadata (no 'tensors' list); {_RESAVE}")
    version = _check_version(info, where)
    if not info["tensors"]:
        raise TicketError(f"{where} lists no tensors; {_RESAVE}")

    masks: dict[str, torch.Tensor] = {}
    for entry in info["tensors"]:
        name, shape, crc = _check_entry(entry, where, version)
        tensor = f"{where}: tensor {name!r}"
        if name in masks:
            raise TicketError(f"{tensor} is listed twice in the metadata; {_RESAVE}")
        if name not in stored:
            raise TicketError(f"{tensor} is listed in the metadata but absent from the file; {_RESAVE}")
        masks[name] = _check_mask(stored[name], entry, shape, crc, tensor)
    unlisted = [n for n in stored if n not in masks]
    if unlisted:
        shown = ", ".join(repr(n) for n in unlisted[:10]) + (" ..." if len(unlisted) > 10 else "")
        raise TicketError(
            f"{where} holds {len(unlisted)} mask tensor(s) that its metadata does not list ({shown}); loading it "
            f"would silently drop those masks; {_RESAVE}"
        )
    total = sum(m.numel() for m in masks.values())
    pruned = sum(m.numel() - int(m.count_nonzero()) for m in masks.values())
    recorded = info.get("sparsity")
    if not _is_fraction(recorded) or (total and abs(recorded - pruned / total) * total > 0.5):
        raise TicketError(
            f"{where} records global sparsity {recorded!r} but its masks have {pruned / max(total, 1):.6f}; {_RESAVE}"
        )
    return masks, info, version
