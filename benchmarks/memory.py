"""Extra memory per prunable weight while training with a mask: ours vs ``torch.nn.utils.prune``.

Counts the bytes each approach keeps alive beyond the model (tensor accounting, exact) and checks it against the
RSS growth of a few real training steps in a fresh subprocess (so allocator effects show up too):

* ours: one bool mask per weight on the device (1 B/weight) + the θ0 snapshot on the host (4 B/weight for the
  scope; the whole model with ``rewind_head=True``).
* ``torch.nn.utils.prune`` (what Lightning ModelPruning uses): ``weight_orig`` (the parameter) + a float
  ``weight_mask`` buffer + the recomputed ``weight`` attribute (4 + 4 B/weight on top of the original).

Run: ``python benchmarks/memory.py [--millions 22] [--steps 5]``. Target (issue #6): ours <= 1.1 B/weight on device.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _memory import peak_rss_bytes, run_worker  # noqa: E402


def _model(millions: float):
    import torch
    from torch import nn

    torch.manual_seed(0)
    hidden = 1024
    n_layers = max(1, round(millions * 1e6 / (2 * hidden * 4 * hidden)))
    layers = nn.ModuleList()
    for _ in range(n_layers):
        block = nn.Module()
        block.intermediate = nn.Linear(hidden, 4 * hidden)
        block.output = nn.Linear(4 * hidden, hidden)
        layers.append(block)
    model = nn.Module()
    model.layers = layers
    return model, hidden


def _forward(model, x):
    import torch

    for block in model.layers:
        x = x + block.output(torch.relu(block.intermediate(x)))
    return x


def worker(method: str, millions: float, steps: int) -> dict:
    import torch

    torch.set_num_threads(2)
    import torch.nn.utils.prune as prune

    from lightning_tickets.masks import global_magnitude_masks
    from lightning_tickets.rewind import take_snapshot
    from lightning_tickets.scope import resolve_scope

    model, hidden = _model(millions)
    scope = dict(resolve_scope(model, "encoder"))
    n = sum(p.numel() for p in scope.values())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(64, hidden)

    def step():
        opt.zero_grad(set_to_none=True)
        _forward(model, x).square().mean().backward()
        opt.step()

    for _ in range(2):  # warm up: optimizer state and allocator reach steady state first
        step()
    base = peak_rss_bytes()
    device_bytes = host_bytes = 0
    if method == "ours":
        masks = global_magnitude_masks(scope, None, 0.7)
        snapshot = take_snapshot(scope, "cpu")
        device_bytes = sum(m.numel() * m.element_size() for m in masks.values())
        host_bytes = sum(t.numel() * t.element_size() for t in snapshot.values())
        params, mlist = list(masks), list(masks.values())
        for _ in range(steps):
            step()
            with torch.no_grad():
                torch._foreach_mul_([scope[k] for k in params], mlist)
    elif method == "torch_prune":
        mods = [(model.get_submodule(k.rsplit(".", 1)[0]), "weight") for k in scope]
        prune.global_unstructured(mods, prune.L1Unstructured, amount=0.7)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)  # weight_orig replaced the parameter objects
        for m, _ in mods:
            device_bytes += m.weight_mask.numel() * m.weight_mask.element_size() + m.weight.numel() * 4
        for _ in range(steps + 2):
            step()
    grown = max(0, peak_rss_bytes() - base)
    return {
        "method": method,
        "weights": n,
        "device_bytes_per_weight": device_bytes / n,
        "host_bytes_per_weight": host_bytes / n,
        "rss_growth_bytes_per_weight": grown / n,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--millions", type=float, default=22)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--json")
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker[0], float(a.worker[1]), int(a.worker[2]))))
        return 0
    rows = [run_worker(__file__, m, str(a.millions), str(a.steps)) for m in ("ours", "torch_prune")]
    print(f"{rows[0]['weights']:,} prunable weights, sparsity 0.7, AdamW")
    print(f"{'method':<12} {'device B/w':>11} {'host B/w':>9} {'RSS growth B/w':>15}")
    for r in rows:
        print(
            f"{r['method']:<12} {r['device_bytes_per_weight']:>11.2f} {r['host_bytes_per_weight']:>9.2f} "
            f"{r['rss_growth_bytes_per_weight']:>15.2f}"
        )
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    ok = rows[0]["device_bytes_per_weight"] <= 1.1
    print("target met (ours <= 1.1 B/weight on device)" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
