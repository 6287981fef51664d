"""Safe file I/O: atomic writes (temp file + fsync + replace) and pickle-free loading of weight files.

Every file the library writes goes through :func:`atomic_write`: the data goes to a hidden temporary file next to
the target (``.NAME.<random>.tmp``), is flushed and fsync'ed, then renamed over the target with :func:`os.replace`.
An interrupted write (even ``SIGKILL``) therefore leaves either the previous file or the new one, never a mix; at
worst a hidden temporary file stays behind. New files get the usual mode ``0o666 & ~umask`` (like ``open``).

:func:`load_state_dict_file` reads a ``.safetensors``, ``.ckpt`` or ``torch.save`` file without running code from
it: pickled files are read with ``torch.load(weights_only=True)``; a file that needs more is refused unless the
caller opts in with ``trust_checkpoint=True`` (CLI: ``--trust-checkpoint``).

Example:
    >>> import json, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_write(d / "x.json", binary=False) as f:
    ...     _ = f.write(json.dumps({"a": 1}))
    >>> json.loads((d / "x.json").read_text())
    {'a': 1}
    >>> sorted(p.name for p in d.iterdir())  # no temporary file left
    ['x.json']
"""

from __future__ import annotations

import os
import pickle
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch

__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "atomic_write",
    "check_regular_file",
    "load_state_dict_file",
    "temp_path",
]

_TRUST_HINT = (
    "Only if you trust where the file came from, opt in with --trust-checkpoint (CLI) or trust_checkpoint=True "
    "(Python); better, re-save its weights as a plain state dict (torch.save(model.state_dict(), PATH)) or as "
    ".safetensors"
)


class CheckpointError(ValueError):
    """A weight file is missing, not a regular file, corrupt, holds no state dict, or is unsafe to load."""


class UnsafeCheckpointError(CheckpointError):
    """A pickled file needs more than tensors and plain containers to load, so loading it could run code."""


def temp_path(path: str | os.PathLike[str]) -> Path:
    """The hidden temporary file used while writing ``path``: ``DIR/.NAME.<random hex>.tmp``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def _fsync_dir(directory: Path) -> None:
    try:  # make the rename itself durable (POSIX); best effort elsewhere
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str | os.PathLike[str], binary: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; on success, fsync it and move it over ``path``.

    Parent directories are created. If the ``with`` block raises (or the process dies), ``path`` keeps its previous
    content and the temporary file is removed (a killed process may leave the hidden temporary file). The file is
    created with ``open(..., "x")``, so its mode follows the umask like any new file (``0o644`` under umask 022).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "out.bin"
        >>> with atomic_write(p) as f:
        ...     _ = f.write(b"data")
        >>> p.read_bytes()
        b'data'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "xb" if binary else "x") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def check_regular_file(path: str | os.PathLike[str], what: str, error: type[Exception] = ValueError) -> Path:
    """Raise ``error`` unless ``path`` is an existing regular file (a FIFO or device would block a reader forever).

    Example:
        >>> check_regular_file("/dev/null", "ticket file")
        Traceback (most recent call last):
        ...
        ValueError: ticket file '/dev/null' is not a regular file (it is a character device); pass a regular file
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise error(f"{what} {str(path)!r} does not exist; check the path") from None
    except OSError as e:
        raise error(f"{what} {str(path)!r} cannot be read ({e.strerror or e}); check the path and permissions") from e
    if stat.S_ISDIR(mode):
        raise error(f"{what} {str(path)!r} is a directory; pass the path of a file inside it")
    if not stat.S_ISREG(mode):
        kind = (
            "a FIFO (named pipe)"
            if stat.S_ISFIFO(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "a character device"
            if stat.S_ISCHR(mode)
            else "a block device"
            if stat.S_ISBLK(mode)
            else "not a plain file"
        )
        raise error(f"{what} {str(path)!r} is not a regular file (it is {kind}); pass a regular file")
    return path


def load_state_dict_file(
    path: str | os.PathLike[str], trust_checkpoint: bool = False, what: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file, a Lightning ``.ckpt`` (its ``state_dict``) or a ``torch.save`` file.

    Pickled files are read with ``torch.load(weights_only=True)``, which cannot run code from the file. A file that
    needs more (arbitrary Python objects) raises :class:`UnsafeCheckpointError` naming the opt-in; with
    ``trust_checkpoint=True`` it is unpickled in full (``weights_only=False``), which runs any code the file holds.
    Non-tensor entries of the state dict are dropped.

    Raises:
        UnsafeCheckpointError: the file needs full unpickling and ``trust_checkpoint`` is False.
        CheckpointError: the file is missing, not a regular file, unreadable/corrupt or holds no state dict.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.pt"
        >>> torch.save({"state_dict": {"w": torch.ones(2), "step": 3}}, p)
        >>> load_state_dict_file(p)
        {'w': tensor([1., 1.])}
    """
    path = check_regular_file(path, what, CheckpointError)
    where = f"{what} {str(path)!r}"
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as e:  # safetensors raises its own error type on corrupt files
            raise CheckpointError(f"{where} is truncated or corrupt ({e}); re-save or re-download it") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except pickle.UnpicklingError as e:
        text = str(e)
        if trust_checkpoint or "weights only load failed" not in text.lower():
            raise CheckpointError(f"{where} is truncated or corrupt ({text.splitlines()[0]}); re-save it") from e
        reason = (
            text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0] if "WeightsUnpickler" in text else ""
        )
        raise UnsafeCheckpointError(
            f"{where} was not loaded: the safe (weights-only) unpickler refused it ({reason or 'not plain weights'}). "
            "It is corrupt, or it holds Python objects that only a full unpickle can create, and a full unpickle "
            f"can run code from the file. {_TRUST_HINT}"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, ImportError) as e:
        raise CheckpointError(f"{where} is truncated or corrupt or not a checkpoint ({e}); re-save it") from e
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict):
        raise CheckpointError(
            f"{where} holds no state dict (got {type(obj).__name__}); expected a .ckpt, a torch.save'd state dict "
            "or a .safetensors file"
        )
    return {k: v for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
