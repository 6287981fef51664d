"""Mixed precision: bf16 autocast keeps masks exact and rewinding bit-exact; the CLI warns where bf16 is slow."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lightning_tickets.cli import cpu_bf16_warning
from lightning_tickets.toy import ToyClassifier, ToyDataModule

from test_callback import Probe, make_cb, trainer  # isort: skip  (tests/ is on sys.path)


def test_bf16_mixed_keeps_masks_exact_and_rewinds_bit_exactly(tmp_path):
    L.seed_everything(0)
    cb = make_cb(tmp_path, target_sparsity=0.75, rate=0.5)  # rounds at 0, 0.5, 0.75
    probe = Probe(cb)
    model = ToyClassifier(scheduler="linear")
    trainer(callbacks=[cb, probe], tmp_path=tmp_path, precision="bf16-mixed").fit(
        model, ToyDataModule(num_samples=256, batch_size=64)
    )
    assert [r["round"] for r in cb.results] == [0, 1, 2]
    total = sum(p.numel() for p in cb._params.values())
    for start in probe.round_starts[1:]:
        r, masks = start["round"], start["masks"]
        assert sum(int((~m).sum()) for m in masks.values()) == round(cb.sparsities[r] * total)
        for n, p in start["params"].items():
            assert p.dtype == torch.float32  # master weights stay float32 under autocast
            expected = probe.theta0[n] * masks[n] if n in masks else probe.theta0[n]
            assert torch.equal(p, expected), (r, n)
    assert probe.steps_checked > 0 and probe.zero_violations == 0


@pytest.mark.parametrize(
    ("precision", "accelerator", "native", "warns"),
    [
        ("bf16-mixed", "cpu", False, True),
        ("bf16-true", "cpu", False, True),
        ("bf16-mixed", "cpu", True, False),
        ("32-true", "cpu", False, False),
        ("16-mixed", "gpu", False, False),
        ("bf16-mixed", "gpu", False, False),
    ],
)
def test_cpu_bf16_warning(precision, accelerator, native, warns):
    message = cpu_bf16_warning(precision, accelerator, native=native)
    assert (message is not None) == warns
    if warns:
        assert precision in message and "32-true" in message
