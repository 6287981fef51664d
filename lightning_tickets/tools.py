"""``lightning-tickets ticket ...``: inspect, compare, apply and plot tickets from the shell.

Usage::

    lightning-tickets ticket info tickets/round-05.safetensors            # metadata + per-tensor sparsity table
    lightning-tickets ticket compare A.safetensors B.safetensors --png overlap.png   # IoU matrix of kept weights
    lightning-tickets ticket apply tickets/round-05.safetensors last.ckpt pruned.safetensors [--remap model.=]
    lightning-tickets ticket plot imp/summary.json rp/summary.json --labels IMP RP --out imp_vs_rp.png

``apply`` writes a plain state dict (safetensors, or ``torch.save`` for other suffixes) with the pruned weights set
to zero; it loads with ``model.load_state_dict`` without this library. The output is written atomically (temp file +
replace) and may not be one of the inputs. Pickled checkpoints are read with ``torch.load(weights_only=True)``; one
that needs more is refused unless ``--trust-checkpoint`` is given (a full unpickle can run code from the file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from lightning_tickets.fileio import CheckpointError, atomic_write, check_regular_file, load_state_dict_file
from lightning_tickets.report import plot_summary
from lightning_tickets.ticket import Ticket, TicketError


class _ToolError(ValueError):
    """A bad input to a ``ticket`` command that is not a ticket (e.g. a corrupt ``summary.json``)."""


def _info(args: argparse.Namespace) -> int:
    t = Ticket.load(args.ticket)
    if args.json:
        print(
            json.dumps(
                {
                    "sparsity": t.sparsity,
                    "num_weights": t.num_weights,
                    "format_version": t.format_version,
                    "library_version": t.library_version,
                    "metadata": t.metadata,
                    "tensors": t.profile(),
                },
                indent=2,
            )
        )
        return 0
    print(f"{args.ticket}: {len(t.masks)} tensors, {t.num_weights:,} weights, sparsity {t.sparsity:.4%}")
    print(f"written by lightning-tickets {t.library_version} (format {t.format_version})")
    for k, v in t.metadata.items():
        print(f"  {k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}")
    width = max(len(n) for n in t.masks)
    print(f"{'tensor':<{width}}  {'shape':>14}  {'weights':>10}  {'kept':>10}  {'sparsity':>8}")
    for row in t.profile():
        shape = "x".join(str(s) for s in row["shape"])
        print(f"{row['name']:<{width}}  {shape:>14}  {row['numel']:>10,}  {row['kept']:>10,}  {row['sparsity']:>8.2%}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    tickets = [Ticket.load(p) for p in args.tickets]
    n = len(tickets)
    matrix = [[1.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            matrix[i][j] = matrix[j][i] = tickets[i].overlap(tickets[j])["global"]
    labels = args.labels or [Path(p).stem for p in args.tickets]
    if len(labels) != n:
        raise SystemExit(f"--labels has {len(labels)} names for {n} tickets")
    width = max(len(s) for s in labels)
    print("IoU of kept weights")
    print(" " * width + "  " + "  ".join(f"{s:>{max(6, len(s))}}" for s in labels))
    for i, s in enumerate(labels):
        print(f"{s:<{width}}  " + "  ".join(f"{matrix[i][j]:>{max(6, len(labels[j]))}.3f}" for j in range(n)))
    if args.json:
        with atomic_write(args.json, binary=False) as f:
            f.write(json.dumps({"labels": labels, "iou": matrix}, indent=2))
    if args.png:
        from matplotlib.figure import Figure  # the object API: the user's pyplot backend is never changed

        fig = Figure(figsize=(1.2 * n + 2, 1.2 * n + 1.5))
        ax = fig.subplots()
        im = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(n), labels, rotation=45, ha="right")
        ax.set_yticks(range(n), labels)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{matrix[i][j]:.2f}", ha="center", va="center", color="w" if matrix[i][j] < 0.6 else "k")
        fig.colorbar(im, ax=ax, label="IoU of kept weights")
        fig.tight_layout()
        with atomic_write(args.png) as f:
            fig.savefig(f, dpi=120, format="png")
        print(f"heatmap: {args.png}")
    return 0


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name the same file (same resolved path, or same inode via links)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_output(out: Path, inputs: dict[str, str]) -> None:
    for what, src in inputs.items():
        if _same_file(out, Path(src)):
            raise TicketError(
                f"output {str(out)!r} is the same file as the input {what} {src!r}; writing it would destroy the "
                "input. Choose another output path"
            )
    if out.is_dir():
        raise TicketError(f"output {str(out)!r} is a directory; pass a file path such as {str(out / 'pruned.pt')!r}")


def _apply(args: argparse.Namespace) -> int:
    out = Path(args.out)
    _check_output(out, {"ticket": args.ticket, "checkpoint": args.checkpoint})
    t = Ticket.load(args.ticket)
    sd = load_state_dict_file(args.checkpoint, trust_checkpoint=args.trust_checkpoint)
    remap = dict(item.split("=", 1) for item in args.remap or [])

    def mapped(name: str) -> str:
        best = max((k for k in remap if name.startswith(k)), key=len, default=None)
        return name if best is None else remap[best] + name[len(best) :]

    missing, bad = [], []
    for name, mask in t.masks.items():
        key = mapped(name)
        if key not in sd:
            missing.append(key)
        elif tuple(sd[key].shape) != tuple(mask.shape):
            bad.append(f"{key}: checkpoint {tuple(sd[key].shape)} vs ticket {tuple(mask.shape)}")
    if missing or bad:
        raise TicketError(
            f"ticket {args.ticket} does not fit checkpoint {args.checkpoint}: missing {missing[:10]}, shape "
            f"mismatches {bad[:10]}; use --remap OLD_PREFIX=NEW_PREFIX (e.g. --remap model.=)"
        )
    for name, mask in t.masks.items():
        key = mapped(name)
        sd[key] = sd[key].masked_fill(~mask, 0).contiguous()
    with atomic_write(out) as f:  # temp file + fsync + replace: a kill never leaves a partial output
        if out.suffix == ".safetensors":
            from safetensors.torch import save

            f.write(save({k: v.contiguous() for k, v in sd.items()}))
        else:
            torch.save(sd, f)
    print(f"wrote {out}: {len(sd)} tensors, {len(t.masks)} pruned to sparsity {t.sparsity:.2%}")
    return 0


def _is_row(row: object) -> bool:
    return (
        isinstance(row, dict)
        and isinstance(row.get("sparsity"), (int, float))
        and isinstance(row.get("score"), (int, float, type(None)))
    )


def _read_summary(path: str) -> dict:
    """A ``summary.json`` as a dict with a ``rounds`` list, or a one-line :class:`_ToolError`."""
    check_regular_file(path, "summary file", _ToolError)
    try:
        data = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise _ToolError(f"summary file {path!r} is not valid JSON ({e}); pass a summary.json written by a run") from e
    rows = data.get("rounds") if isinstance(data, dict) else None
    best = data.get("best_relaxed_ticket") if isinstance(data, dict) else None
    if (
        not isinstance(rows, list)
        or not all(_is_row(r) for r in rows)
        or not (best is None or _is_row(best))
        or not isinstance(data.get("dense_score"), (int, float, type(None)))
    ):
        raise _ToolError(
            f"summary file {path!r} has no 'rounds' list of {{'sparsity', 'score', ...}} rows; pass a summary.json "
            "written by a run"
        )
    return data


def _plot(args: argparse.Namespace) -> int:
    summaries = [_read_summary(p) for p in args.summaries]
    labels = args.labels or [s.get("method", Path(p).parent.name) for s, p in zip(summaries, args.summaries)]
    if len(labels) != len(summaries):
        raise SystemExit(f"--labels has {len(labels)} names for {len(summaries)} summaries")
    print(f"plot: {plot_summary(summaries, args.out, labels)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``ticket`` sub-command parser."""
    p = argparse.ArgumentParser(
        prog="lightning-tickets ticket", description="Inspect, compare, apply and plot tickets."
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("info", help="metadata and per-tensor sparsity of a ticket")
    a.add_argument("ticket")
    a.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a.set_defaults(fn=_info)
    a = sub.add_parser("compare", help="overlap (IoU of kept weights) of N tickets")
    a.add_argument("tickets", nargs="+")
    a.add_argument("--labels", nargs="+")
    a.add_argument("--png", help="write a heatmap PNG")
    a.add_argument("--json", help="write the matrix as JSON")
    a.set_defaults(fn=_compare)
    a = sub.add_parser("apply", help="write a plain pruned state dict from a checkpoint")
    a.add_argument("ticket")
    a.add_argument("checkpoint", help=".ckpt, torch.save'd state dict or .safetensors")
    a.add_argument("out", help="output file (.safetensors or anything else for torch.save)")
    a.add_argument("--remap", nargs="*", metavar="OLD=NEW", help="ticket-name prefix -> checkpoint-key prefix")
    a.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="fully unpickle a checkpoint that holds more than weights (can run code from it: trusted files only)",
    )
    a.set_defaults(fn=_apply)
    a = sub.add_parser("plot", help="score vs sparsity from summary.json files (several runs overlaid)")
    a.add_argument("summaries", nargs="+")
    a.add_argument("--labels", nargs="+")
    a.add_argument("--out", default="summary.png")
    a.set_defaults(fn=_plot)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run a ``ticket`` sub-command; ticket errors are printed as one line and exit with status 2."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.fn(args))
    except (TicketError, CheckpointError, _ToolError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
