"""Bytes per weight of a ticket file vs ``torch.save`` of float masks and of bool masks (22.4M-weight scope).

Run: ``python benchmarks/ticket_size.py [--millions 22.4] [--sparsity 0.7]``. Target: ticket <= 0.13 B/weight.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from lightning_tickets.masks import global_magnitude_masks
from lightning_tickets.ticket import Ticket


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--millions", type=float, default=22.4)
    p.add_argument("--sparsity", type=float, default=0.7)
    a = p.parse_args()
    torch.manual_seed(0)
    n = int(a.millions * 1_000_000)
    shapes = []
    while sum(r * c for r, c in shapes) < n:
        shapes.append((1536, 384) if len(shapes) % 2 else (384, 1536))
    weights = {f"encoder.layer.{i // 6}.w{i}.weight": torch.randn(s) for i, s in enumerate(shapes)}
    masks = global_magnitude_masks(weights, None, a.sparsity)
    total = sum(m.numel() for m in masks.values())
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        Ticket(masks, {"round": 5}).save(d / "t.safetensors")
        torch.save({k: m.float() for k, m in masks.items()}, d / "float.pt")
        torch.save(masks, d / "bool.pt")
        sizes = {
            name: (d / f).stat().st_size
            for name, f in (
                ("ticket (bit-packed safetensors)", "t.safetensors"),
                ("torch.save float masks", "float.pt"),
                ("torch.save bool masks", "bool.pt"),
            )
        }
    print(f"{total:,} weights, sparsity {a.sparsity}")
    for name, size in sizes.items():
        print(f"{name:<34} {size / 2**20:9.2f} MiB  {size / total:.4f} B/weight")
    ratio = sizes["ticket (bit-packed safetensors)"] / total
    print(f"ticket / bool torch.save: {ratio / (sizes['torch.save bool masks'] / total):.3f}x")
    ok = ratio <= 0.13
    print("target met (<= 0.13 B/weight)" if ok else "TARGET MISSED: ticket > 0.13 B/weight")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
