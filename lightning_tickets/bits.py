"""Bit-packing of boolean masks: 1 bit per weight on disk and in checkpoints.

Example:
    >>> import torch
    >>> m = torch.tensor([[True, False, True], [False, False, True]])
    >>> packed = pack_bits(m)
    >>> packed.dtype, packed.numel()
    (torch.uint8, 1)
    >>> bool(torch.equal(unpack_bits(packed, m.shape), m))
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Pack a boolean tensor (any shape) into a flat ``uint8`` tensor, 8 values per byte, MSB first.

    The result lives on the CPU; padding bits of the last byte are zero.
    """
    if mask.dtype != torch.bool:
        raise TypeError(f"pack_bits expects a bool tensor, got dtype {mask.dtype}")
    flat = mask.detach().reshape(-1).to("cpu")
    n = flat.numel()
    pad = (-n) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    groups = flat.view(-1, 8).to(torch.uint8)
    return (groups * _WEIGHTS).sum(dim=1, dtype=torch.uint8) if groups.numel() else groups.new_zeros(0)


def unpack_bits(packed: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: return a CPU bool tensor of ``shape``.

    Raises:
        ValueError: if ``packed`` holds fewer bits than ``shape`` needs or more than one spare byte.
    """
    shape = tuple(int(s) for s in shape)
    n = 1
    for s in shape:
        n *= s
    needed = (n + 7) // 8
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != needed:
        raise ValueError(
            f"packed mask has {packed.numel()} bytes of dtype {packed.dtype}; a bool tensor of shape {list(shape)} "
            f"needs exactly {needed} uint8 bytes"
        )
    bits = packed.to("cpu").unsqueeze(1).bitwise_and(_WEIGHTS).ne(0)
    return bits.reshape(-1)[:n].reshape(shape)
