"""How exact global mask computation grows with model size: ours vs concat+kthvalue, 1M to 200M weights.

Each point runs in a fresh subprocess (see threshold.py for how time and extra memory are measured). Writes a table,
a JSON file and a log-log PNG.

Run: ``python benchmarks/scaling.py [--sizes 1 4 16 64 200] [--png docs/results/scaling.png] [--json ...]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _memory import run_worker  # noqa: E402

THRESHOLD = str(Path(__file__).with_name("threshold.py"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", type=int, default=[1, 4, 16, 64, 200])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--png", default="docs/results/scaling.png")
    p.add_argument("--json", default="docs/results/scaling.json")
    a = p.parse_args()
    rows = []
    print(f"{'weights':>12}  {'method':<10} {'seconds':>9} {'extra MiB':>10} {'B/weight':>9}")
    for size in a.sizes:
        for method in ("ours", "kthvalue"):
            r = run_worker(THRESHOLD, method, str(size), str(a.repeats))
            rows.append(r)
            print(
                f"{r['weights']:>12,}  {method:<10} {r['seconds']:>9.3f} {r['extra_bytes'] / 2**20:>10.1f} "
                f"{r['extra_bytes_per_weight']:>9.2f}",
                flush=True,
            )
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(rows, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for method, style in (("ours", "o-"), ("kthvalue", "s--")):
        pts = [r for r in rows if r["method"] == method]
        axes[0].loglog([r["weights"] for r in pts], [r["seconds"] for r in pts], style, label=method)
        axes[1].loglog(
            [r["weights"] for r in pts], [max(r["extra_bytes"], 1) / 2**20 for r in pts], style, label=method
        )
    axes[0].set(xlabel="weights", ylabel="seconds", title="time")
    axes[1].set(xlabel="weights", ylabel="extra MiB (peak RSS)", title="peak extra memory")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.tight_layout()
    fig.savefig(a.png, dpi=120)
    print(f"plot: {a.png}\njson: {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
