"""Direct tests of :mod:`lightning_tickets.bits`: 1 bit per weight, MSB first, numpy.packbits as the oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_tickets.bits import pack_bits, unpack_bits

SHAPES = [(0,), (1,), (7,), (8,), (9,), (3, 5), (2, 0, 4), (4, 4), (3, 7, 11), (1, 1, 1, 13), ()]


def _random_mask(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) < 0.5


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_pack_matches_numpy_packbits_and_round_trips(shape):
    mask = _random_mask(shape, seed=sum(shape) + len(shape))
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.dim() == 1 and packed.device.type == "cpu"
    oracle = np.packbits(mask.numpy().reshape(-1), bitorder="big")  # MSB first, padding bits zero
    assert packed.numel() == (mask.numel() + 7) // 8 == oracle.size
    np.testing.assert_array_equal(packed.numpy(), oracle)
    back = unpack_bits(packed, shape)
    assert back.dtype == torch.bool and tuple(back.shape) == tuple(shape)
    assert torch.equal(back, mask)


def test_msb_first_exact_bytes():
    mask = torch.tensor([True, False, False, False, False, False, False, False, False, True])
    assert pack_bits(mask).tolist() == [0b10000000, 0b01000000]


def test_padding_bits_are_zero_for_all_true_masks():
    for n in range(1, 17):
        packed = pack_bits(torch.ones(n, dtype=torch.bool))
        full, rest = divmod(n, 8)
        expected = [255] * full + ([(0xFF << (8 - rest)) & 0xFF] if rest else [])
        assert packed.tolist() == expected, n


def test_non_contiguous_input_packs_its_logical_order():
    mask = _random_mask((6, 5), seed=3)
    t = mask.t()  # a non-contiguous view
    assert not t.is_contiguous()
    np.testing.assert_array_equal(pack_bits(t).numpy(), np.packbits(t.numpy().reshape(-1)))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.int64])
def test_pack_refuses_non_bool(dtype):
    with pytest.raises(TypeError, match=r"expects a bool tensor, got dtype torch\."):
        pack_bits(torch.zeros(4, dtype=dtype))


def test_unpack_refuses_wrong_byte_count_dtype_and_rank():
    packed = pack_bits(torch.ones(10, dtype=torch.bool))  # 2 bytes
    with pytest.raises(ValueError, match=r"has 2 bytes .*shape \[17\] needs exactly 3 uint8 bytes"):
        unpack_bits(packed, (17,))
    with pytest.raises(ValueError, match=r"has 2 bytes .*shape \[8\] needs exactly 1 uint8 bytes"):
        unpack_bits(packed, (8,))
    with pytest.raises(ValueError, match=r"dtype torch.int16"):
        unpack_bits(packed.to(torch.int16), (10,))
    with pytest.raises(ValueError, match="needs exactly 2 uint8 bytes"):
        unpack_bits(packed.reshape(1, 2), (10,))
    assert unpack_bits(torch.zeros(0, dtype=torch.uint8), (0, 3)).shape == (0, 3)
