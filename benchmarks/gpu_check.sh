#!/usr/bin/env bash
# Sharded-training check on a GPU machine (about 1-2 minutes; every step has a timeout, 5 minutes in all at most).
#
# Runs LotteryTicketCallback with ModelParallelStrategy + FSDP2 (fully_shard) on CUDA/NCCL and compares it with
# DDP on the same seed and data (tests/helpers/sharded_run.py, the script behind tests/test_sharded.py on CPU/gloo):
#   1. IMP, 3 rounds to 75%: DDP, then FSDP2 -> the saved tickets must agree (exactly, or report the difference);
#   2. fixed-ticket mode under FSDP2 with DDP's last ticket -> local masks are the ticket's shards, pruned weights 0.
# Uses min(2, number of GPUs) devices (1 GPU: world size 1, which still exercises DTensor / NCCL on CUDA).
# The CPU/gloo tests cover 2 ranks with uneven shards; this script checks the CUDA code paths.
#
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]        (PY=path/to/python to choose the interpreter)
# Dry run of the script itself on CPU/gloo: ACCEL=cpu DEVICES=2 bash benchmarks/gpu_check.sh
# Exit status: 0 = passed, 1 = a check failed, 2 = no CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PY:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python)
case $PY in /*) ;; *) PY=$REPO/$PY ;; esac
ACCEL=${ACCEL:-cuda}
if [ "$ACCEL" = cuda ]; then
    N=$("$PY" -c "import torch; print(min(2, torch.cuda.device_count()) if torch.cuda.is_available() else 0)")
    if [ "$N" -lt 1 ]; then
        echo "gpu_check: no CUDA device visible; nothing checked" >&2
        exit 2
    fi
    "$PY" -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, torch.cuda.get_device_name(0))"
else
    N=${DEVICES:-2}
fi
OUT=${1:-$(mktemp -d /tmp/lt-gpu-check.XXXXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
echo "gpu_check: $N $ACCEL device(s), output in $OUT"
unset MASTER_ADDR MASTER_PORT RANK LOCAL_RANK WORLD_SIZE NODE_RANK
run() {  # run NAME ARGS...: one Lightning fit (its processes are launched by Lightning)
    local name=$1
    shift
    mkdir -p "$OUT/$name"
    local t0=$SECONDS
    if ! (cd "$OUT/$name" && timeout 150 "$PY" "$REPO/tests/helpers/sharded_run.py" "$@" >log.txt 2>&1); then
        echo "gpu_check: FAILED step $name; last lines of $OUT/$name/log.txt:" >&2
        tail -40 "$OUT/$name/log.txt" >&2
        exit 1
    fi
    echo "gpu_check: $name done in $((SECONDS - t0)) s"
}
common=(--accelerator "$ACCEL" --devices "$N")
run ddp ddp "$OUT/ddp" "${common[@]}"
run fsdp2 fsdp2 "$OUT/fsdp2" "${common[@]}"
run fixed fsdp2 "$OUT/fixed" "${common[@]}" --ticket "$OUT/ddp/tickets/round-02.safetensors" --max-epochs 1
timeout 60 "$PY" - "$OUT" "$N" <<'EOF'
import sys
from pathlib import Path

import torch

from lightning_tickets import Ticket

out, n = Path(sys.argv[1]), int(sys.argv[2])
fail = []
worst = 0.0
for r in range(3):
    a = Ticket.load(out / "ddp" / "tickets" / f"round-{r:02d}.safetensors")
    b = Ticket.load(out / "fsdp2" / "tickets" / f"round-{r:02d}.safetensors")
    if list(a.masks) != list(b.masks):
        fail.append(f"round {r}: tensor names differ")
        continue
    diff = sum(int((a.masks[k] != b.masks[k]).sum()) for k in a.masks)
    worst = max(worst, diff / a.num_weights)
    print(f"round {r}: sparsity ddp {a.sparsity:.4f} fsdp2 {b.sparsity:.4f}, masks differ at {diff} of {a.num_weights}")
    if abs(a.sparsity - b.sparsity) > 1e-9:
        fail.append(f"round {r}: sparsities differ")
if worst > 1e-3:
    fail.append(f"FSDP2 tickets differ from DDP's at {worst:.2%} of the weights (> 0.1%)")
ranks = [torch.load(out / "fixed" / f"rank{r}.pt", weights_only=False) for r in range(n)]
ticket = Ticket.load(out / "ddp" / "tickets" / "round-02.safetensors")
for k, m in ticket.masks.items():
    local = torch.cat([d["masks"][k] for d in ranks])
    if not torch.equal(local, m):
        fail.append(f"fixed ticket: local masks of {k} are not the ticket's shards")
    if not bool((ranks[0]["final"][k][~m] == 0).all()):
        fail.append(f"fixed ticket: pruned weights of {k} are not zero after training")
if fail:
    print("gpu_check: FAILED\n  " + "\n  ".join(fail), file=sys.stderr)
    sys.exit(1)
print("gpu_check: passed" + (" (tickets identical)" if worst == 0 else f" (tickets differ at {worst:.4%})"))
EOF
