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
    backend = dist.get_backend()
    return torch.device("cpu") if backend == "gloo" else t.device


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
