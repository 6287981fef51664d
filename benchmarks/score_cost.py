"""Cost of the importance scores on a MiniLM-sized scope (12 layers of 4 x 384x384 + 2 x 384x1536, a pooler).

Run: ``OMP_NUM_THREADS=1 python benchmarks/score_cost.py`` (random weights; no data, no network). Prints the time of
LAMP scoring, the exact global selection, magnitude with ``min_density``, and one Taylor accumulation step.
"""

from __future__ import annotations

import time

import torch

from lightning_tickets.scores import accumulate_taylor, guarded_masks, score_tensors


def minilm_like(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights shaped like MiniLM-L12-H384's encoder (std 0.05) and its never-trained pooler (std 0.009)."""
    g = torch.Generator().manual_seed(seed)
    params: dict[str, torch.Tensor] = {}
    for layer in range(12):
        for i in range(4):
            params[f"layer.{layer}.attention.{i}"] = torch.randn(384, 384, generator=g) * 0.05
        params[f"layer.{layer}.intermediate"] = torch.randn(1536, 384, generator=g) * 0.05
        params[f"layer.{layer}.output"] = torch.randn(384, 1536, generator=g) * 0.05
    params["pooler"] = torch.randn(384, 384, generator=g) * 0.009
    return params


def main(sparsity: float = 0.7) -> None:
    params = minilm_like()
    n = sum(p.numel() for p in params.values())
    t0 = time.perf_counter()
    scores = score_tensors("lamp", params, None)
    t1 = time.perf_counter()
    lamp = guarded_masks(scores, None, sparsity)
    t2 = time.perf_counter()
    floor = guarded_masks(params, None, sparsity, min_density=0.05, absolute=True)
    t3 = time.perf_counter()
    magnitude = guarded_masks(params, None, sparsity, absolute=True)
    print(f"{n:,} weights in {len(params)} tensors, sparsity {sparsity:.0%}")
    print(f"  LAMP scores {t1 - t0:.2f} s, selection {t2 - t1:.2f} s, magnitude + min_density {t3 - t2:.2f} s")
    kept = {
        name: int(m["pooler"].sum()) for name, m in [("magnitude", magnitude), ("lamp", lamp), ("min_density", floor)]
    }
    print(f"  pooler weights kept of {params['pooler'].numel():,}: {kept}")
    live = {k: torch.nn.Parameter(v) for k, v in params.items()}
    for p in live.values():
        p.grad = torch.randn_like(p)
    sums: dict[str, torch.Tensor] = {}
    accumulate_taylor(sums, live)
    t0 = time.perf_counter()
    for _ in range(5):
        accumulate_taylor(sums, live)
    print(f"  Taylor accumulation {(time.perf_counter() - t0) / 5 * 1000:.0f} ms per optimizer step")


if __name__ == "__main__":
    main()
