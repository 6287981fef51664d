"""Worker launcher for test_sharded.py: raw FSDP2 ``fully_shard`` on 2 gloo processes (spawned fresh).

Each rank shards the same seeded model (uneven shards: 7 rows -> 4 + 3; 1 row -> 1 + 0), runs the building blocks
of lightning_tickets.sharded and dumps what it got; the test compares with the unsharded functions.

Usage: python tests/helpers/sharded_blocks_run.py OUT_DIR PORT
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 7), torch.nn.Linear(7, 1), torch.nn.Linear(1, 3), torch.nn.Linear(3, 10)
    )


def _callback_errors(model: torch.nn.Module) -> list[str]:
    """The callback's fit-start refusals on sharded parameters (structured granularity, mixed scope)."""
    from types import SimpleNamespace

    import lightning as L

    from lightning_tickets import LotteryTicketCallback

    class Wrap(L.LightningModule):
        def __init__(self, inner: torch.nn.Module, extra: bool = False) -> None:
            super().__init__()
            self.inner = inner
            self.extra = torch.nn.Linear(2, 2) if extra else None

    fake_trainer = SimpleNamespace(limit_val_batches=0)
    errors = []
    for cb, module in (
        (LotteryTicketCallback(0.5, epochs_per_round=1, scope="linear", granularity="heads"), Wrap(model)),
        (LotteryTicketCallback(0.5, epochs_per_round=1, scope="linear"), Wrap(model, extra=True)),
    ):
        try:
            cb.on_fit_start(fake_trainer, module)
            errors.append("")
        except ValueError as err:
            errors.append(str(err))
    return errors


def _worker(rank: int, port: int, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Replicate, distribute_tensor

    from lightning_tickets.rewind import restore_snapshot, take_snapshot
    from lightning_tickets.sharded import (
        check_shardable,
        gather_masks,
        gather_tensors,
        global_sparsity,
        local_slices,
        local_tensors,
        reshard,
        scatter_masks,
        sharded_masks,
    )

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model = make_model()
        mesh = init_device_mesh("cpu", (2,))
        for layer in model[:2]:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)  # layers 2, 3 belong to the root group
        params = {n: p for n, p in model.named_parameters() if n.endswith("weight")}
        res: dict = {
            "sharded": check_shardable(params),
            "local_shapes": {n: list(p.to_local().shape) for n, p in params.items()},
        }
        # masks: global / layerwise magnitude, random; two rounds each
        for method, gran in (("magnitude", "global"), ("magnitude", "layerwise"), ("random", "global")):
            g = torch.Generator().manual_seed(7)
            m1 = sharded_masks(params, None, 0.5, method, gran, g)
            m2 = sharded_masks(params, m1, 0.8, method, gran, g)
            res[(method, gran)] = (
                gather_masks(m1, params, dst=None),
                gather_masks(m2, params, dst=0),
                {n: m.clone() for n, m in m2.items()},
                global_sparsity(m2),
            )
        # scatter of a full ticket = the local part of the gathered one
        full = res[("magnitude", "global")][0]
        res["scattered"] = scatter_masks(full, params)
        # per-shard snapshot, training-like change, rewind; and gather_tensors of the snapshot
        snap = take_snapshot(local_tensors(dict(model.named_parameters())))
        x = torch.randn(6, 5, generator=torch.Generator().manual_seed(rank))
        model.eval()
        with torch.no_grad():
            model(x)
        res["unsharded_after_eval"] = type(model[3].weight).__name__  # the root's group stays unsharded
        reshard(model)
        with torch.no_grad():
            for p in model.parameters():
                p.to_local().add_(1.0)
        restore_snapshot(local_tensors(dict(model.named_parameters())), snap)
        res["rewound"] = {n: p.full_tensor() for n, p in model.named_parameters()}
        res["snapshot_full"] = gather_tensors(snap, dict(model.named_parameters()), dst=0)
        res["slices_roundtrip"] = local_slices(res["rewound"], dict(model.named_parameters()))
        res["snapshot_local"] = snap
        # masks applied on the local shard reach the full tensor
        m = res[("magnitude", "global")][2]
        with torch.no_grad():
            torch._foreach_mul_([params[n].to_local() for n in m], [m[n].to(torch.float32) for n in m])
        res["masked_full"] = {n: params[n].full_tensor() for n in m}
        # a replicated (tensor-parallel style) DTensor is refused with a clear error
        try:
            check_shardable({"rep": distribute_tensor(torch.zeros(4, 4), mesh, [Replicate()])})
            res["replicate_error"] = None
        except ValueError as err:
            res["replicate_error"] = str(err)
        res["callback_errors"] = _callback_errors(model)
        torch.save(res, os.path.join(out, f"r{rank}.pt"))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repo
    mp.start_processes(_worker, args=(int(sys.argv[2]), sys.argv[1]), nprocs=2, start_method="spawn")
