"""Shared helpers: run a measurement in a fresh subprocess and read its peak RSS (Linux ``ru_maxrss``)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys


def peak_rss_bytes() -> int:
    """High-water mark of this process's resident memory, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_worker(script: str, *args: str) -> dict:
    """Run ``python script --worker args...`` and parse the JSON line it prints last."""
    out = subprocess.run([sys.executable, script, "--worker", *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
