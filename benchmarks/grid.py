"""Resumable benchmark grids that several processes can work on at once: one lock file per running cell.

A grid script caches every finished cell as ``<cache>/<name>.json``. To spread a grid over processes (e.g. two
one-thread processes on a 2-core machine, which beats one two-thread process there), each process claims a cell by
creating ``<cache>/<name>.lock`` (``O_CREAT | O_EXCL``, holding its pid) before running it and removes the lock when
the cell is done or has failed. A lock whose process no longer exists (killed run) is taken over. Not a test
module: imported by ``ticket_quality.py`` and ``transfer.py``.

Example (the loop of a grid script)::

    for cell in claimed_cells(lambda: todo_cells(), cache, name=lambda c: c["name"]):
        run_cell(cell)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def try_claim(cache: Path, name: str) -> bool:
    """Claim cell ``name`` for this process; False when another live process holds it."""
    lock = cache / f"{name}.lock"
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text() or 0)
            except (OSError, ValueError):
                return False
            if pid and pid != os.getpid() and not _alive(pid):
                lock.unlink(missing_ok=True)  # stale: its process is gone
                continue
            return pid == os.getpid()
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True


def release(cache: Path, name: str) -> None:
    """Drop this process's claim on cell ``name``."""
    (cache / f"{name}.lock").unlink(missing_ok=True)


def claimed_cells(
    todo: Callable[[], list[dict[str, Any]]],
    cache: Path,
    name: Callable[[dict[str, Any]], str],
    max_cells: int | None = None,
    poll_s: float = 30.0,
    wait: bool = True,
) -> Iterator[dict[str, Any]]:
    """Yield unfinished cells this process has claimed, in ``todo()`` order, releasing each after its turn.

    ``todo()`` is re-evaluated after every cell (finished cells can unlock new ones, e.g. controls that need an IMP
    ticket). When every unfinished cell is held by another process, wait ``poll_s`` seconds and look again (or, with
    ``wait=False``, stop: e.g. to move on to another grid when the cells left cannot unlock new ones); stop when
    nothing is left or after ``max_cells`` cells.
    """
    done = 0
    while max_cells is None or done < max_cells:
        cells = [c for c in todo() if not (cache / f"{name(c)}.json").exists()]
        if not cells:
            return
        cell = next((c for c in cells if try_claim(cache, name(c))), None)
        if cell is None:
            if not wait:
                print(f"[{time.strftime('%H:%M:%S')}] {len(cells)} cells left, all running elsewhere: stopping")
                return
            print(f"[{time.strftime('%H:%M:%S')}] {len(cells)} cells left, all running elsewhere: waiting", flush=True)
            time.sleep(poll_s)
            continue
        try:
            if (cache / f"{name(cell)}.json").exists():  # finished by another process meanwhile
                continue
            print(f"[{time.strftime('%H:%M:%S')}] cell {name(cell)} ({len(cells)} left)", flush=True)
            yield cell
            done += 1
        finally:
            release(cache, name(cell))
