"""Launch a helper script in a fresh interpreter with a clean distributed environment.

Example:
    >>> sorted(k for k in clean_env() if k.startswith(("MASTER_", "RANK", "LOCAL_RANK")))
    []
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

HELPERS = Path(__file__).resolve().parent
#: environment variables of an earlier in-process run (ports, ranks, seeds) that must not reach a new launch
_DROP = ("PL_", "LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_", "NODE_RANK", "GROUP_RANK", "TORCHELASTIC", "LT_")


def clean_env() -> dict[str, str]:
    """This process's environment without distributed / Lightning launch variables, one OpenMP thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP)}
    env["OMP_NUM_THREADS"] = "1"
    return env


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_helper(script: str, *args: object, cwd: Path, timeout: float = 400) -> None:
    """Run ``tests/helpers/<script>`` with ``args`` in ``cwd`` (created); fail with the output tails if it fails.

    A fresh interpreter spawns the ranks: forking a pytest process whose OpenMP pool is running can deadlock.
    """
    cwd = Path(cwd)
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, str(HELPERS / script), *map(str, args)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
    assert proc.returncode == 0, f"{script} {args} failed:\n" + proc.stdout[-3000:] + proc.stderr[-4000:]
