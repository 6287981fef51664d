"""Exact global magnitude threshold: time and peak extra memory, ours vs concat+kthvalue vs global_unstructured.

Each (method, size) runs in a fresh subprocess so peak RSS is clean. "Extra" memory = peak RSS during the call minus
the high-water mark after allocating the weights AND a bool mask buffer of the same element count (the mask is the
output, so it is not counted as overhead). Times are medians of ``--repeats`` calls.

Run: ``python benchmarks/threshold.py [--sizes 22 85] [--repeats 3] [--json out.json]`` (sizes in millions).
Targets (issue #6): ours uses <= 1 extra byte per weight and is no slower than concat+kthvalue. Exit 1 if missed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _memory import peak_rss_bytes, run_worker  # noqa: E402

SPARSITY = 0.7


def _weights(n_million: int):
    import torch

    torch.manual_seed(0)
    n = n_million * 1_000_000
    sizes = [4 * 1024 * 1024, 1024 * 1024, 3 * 1024 * 1024]  # BERT-like mix of tensor sizes
    out, i, total = {}, 0, 0
    while total < n:
        s = min(sizes[i % 3], n - total)
        out[f"w{i}"] = torch.randn(s)
        total += s
        i += 1
    return out


def worker(method: str, n_million: int, repeats: int) -> dict:
    import torch

    torch.set_num_threads(2)
    import torch.nn.utils.prune  # noqa: F401  (imports outside the measured region)

    from lightning_tickets.masks import global_magnitude_masks

    weights = _weights(n_million)
    n = sum(w.numel() for w in weights.values())
    buf = torch.ones(n, dtype=torch.bool)  # the output mask's size: touched, then freed
    del buf
    base = peak_rss_bytes()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        if method == "ours":
            masks = global_magnitude_masks(weights, None, SPARSITY)
        elif method == "kthvalue":
            flat = torch.cat([w.abs().reshape(-1) for w in weights.values()])
            k = round(SPARSITY * n)
            thr = flat.kthvalue(k).values
            del flat
            masks = {name: w.abs() > thr for name, w in weights.items()}
        elif method == "global_unstructured":
            import torch.nn.utils.prune as prune
            from torch import nn

            mods = []
            for w in weights.values():
                m = nn.Module()
                m.weight = nn.Parameter(w, requires_grad=False)
                mods.append(m)
            prune.global_unstructured([(m, "weight") for m in mods], prune.L1Unstructured, amount=SPARSITY)
            masks = {f"w{i}": m.weight_mask.bool() for i, m in enumerate(mods)}
            for m in mods:
                prune.remove(m, "weight")
        else:
            raise SystemExit(f"unknown method {method}")
        times.append(time.perf_counter() - t0)
        pruned = sum(int((~m).sum()) for m in masks.values())
        del masks
    extra = max(0, peak_rss_bytes() - base)
    return {
        "method": method,
        "weights": n,
        "seconds": statistics.median(times),
        "extra_bytes": extra,
        "extra_bytes_per_weight": extra / n,
        "pruned": pruned,
        "expected_pruned": round(SPARSITY * n),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", nargs=3, metavar=("METHOD", "MILLIONS", "REPEATS"), help=argparse.SUPPRESS)
    p.add_argument("--sizes", nargs="+", type=int, default=[22, 85])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json")
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker[0], int(a.worker[1]), int(a.worker[2]))))
        return 0
    rows, ok = [], True
    for size in a.sizes:
        for method in ("ours", "kthvalue", "global_unstructured"):
            r = run_worker(__file__, method, str(size), str(a.repeats))
            rows.append(r)
            print(
                f"{size:>4}M  {method:<20} {r['seconds']:8.3f} s  extra {r['extra_bytes'] / 2**20:9.1f} MiB "
                f"({r['extra_bytes_per_weight']:.2f} B/weight)  pruned {r['pruned']:,} (exact: "
                f"{r['pruned'] == r['expected_pruned']})",
                flush=True,
            )
        ours = next(r for r in rows if r["method"] == "ours" and r["weights"] >= size * 1_000_000)
        ref = next(r for r in rows if r["method"] == "kthvalue" and r["weights"] == ours["weights"])
        ratio = ours["seconds"] / ref["seconds"]
        print(f"      ours / kthvalue time: {ratio:.2f}x; ours extra {ours['extra_bytes_per_weight']:.2f} B/weight")
        ok &= ours["extra_bytes_per_weight"] <= 1.0 and ratio <= 1.10 and ours["pruned"] == ours["expected_pruned"]
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    print("targets met" if ok else "TARGET MISSED: ours must use <= 1 B/weight extra and be <= 1.1x kthvalue time")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
