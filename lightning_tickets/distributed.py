"""The few collectives the callback needs: broadcast masks, tensors and small objects from rank 0.

All functions are no-ops in a single process. Masks travel bit-packed (1 bit per weight).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist

from lightning_tickets.bits import pack_bits, unpack_bits


def is_distributed() -> bool:
    """True when a default process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _comm_device(t: torch.Tensor) -> torch.device:
    """Where ``t`` travels: the CPU on gloo; otherwise its device, or the current GPU for a CPU tensor (NCCL)."""
    backend = dist.get_backend()
    if backend == "gloo":
        return torch.device("cpu")
    if t.device.type == "cpu" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return t.device


@torch.no_grad()
def broadcast_tensors_(tensors: Mapping[str, torch.Tensor], src: int = 0) -> None:
    """Overwrite every tensor in place with rank ``src``'s values (name order must agree across ranks)."""
    if not is_distributed():
        return
    for t in tensors.values():
        dev = _comm_device(t)
        buf = t.detach().to(dev).contiguous() if dev != t.device or not t.is_contiguous() else t.detach()
        dist.broadcast(buf, src=src)
        if buf is not t:
            t.copy_(buf)


def broadcast_masks(masks: Mapping[str, torch.Tensor], src: int = 0) -> dict[str, torch.Tensor]:
    """Return rank ``src``'s masks on every rank (bit-packed on the wire, unpacked on each mask's device)."""
    if not is_distributed():
        return dict(masks)
    out = {}
    for name, m in masks.items():
        packed = pack_bits(m)
        dev = _comm_device(m)
        packed = packed.to(dev)
        dist.broadcast(packed, src=src)
        out[name] = unpack_bits(packed.cpu(), m.shape).to(m.device)
    return out


def broadcast_object(obj: Any, strategy=None, src: int = 0) -> Any:
    """Broadcast a picklable object (through ``strategy.broadcast`` when a Lightning strategy is given)."""
    if strategy is not None:
        return strategy.broadcast(obj, src=src)
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all ranks (returns a new CPU tensor; identity in a single process)."""
    if not is_distributed():
        return t
    buf = t.clone()
    if dist.get_backend() != "gloo" and torch.cuda.is_available():
        buf = buf.cuda()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.cpu()


def exclusive_prefix_sum(n: int) -> int:
    """Sum of ``n`` over the ranks below this one (0 on rank 0 and in a single process)."""
    if not is_distributed():
        return 0
    t = torch.tensor([n], dtype=torch.int64)
    if dist.get_backend() != "gloo" and torch.cuda.is_available():
        t = t.cuda()
    out = [torch.zeros_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return int(sum(int(x.item()) for x in out[: dist.get_rank()]))


def histogram_reducers() -> dict:
    """Keyword arguments for :func:`lightning_tickets.masks.global_magnitude_masks` on sharded scopes.

    Example:
        >>> from lightning_tickets.masks import global_magnitude_masks
        >>> import torch
        >>> global_magnitude_masks({"w": torch.tensor([3.0, 1.0])}, sparsity=0.5, **histogram_reducers())["w"].tolist()
        [True, False]
    """
    return {"all_reduce": all_reduce_sum, "prefix_sum": exclusive_prefix_sum}
