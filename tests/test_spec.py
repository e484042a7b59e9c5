"""Unit tests of the integer-grid maths every method shares (`edgeasr.quant.spec`): no model needed."""

from __future__ import annotations

import pytest
import torch

from edgeasr.errors import QuantizationError
from edgeasr.quant.methods.hqq import HQQOptions, hqq_qparams
from edgeasr.quant.spec import (QuantSpec, dequantize_weight, fake_quant_activation, fake_quant_weight,
                                from_groups, grid_from_range, group_mask, pack_codes, quantize_weight, to_groups,
                                unpack_codes, weight_qparams)


def weights(out_f: int = 6, in_f: int = 96, seed: int = 0) -> torch.Tensor:
    return torch.randn(out_f, in_f, generator=torch.Generator().manual_seed(seed))


def test_grid_covers_the_range_asymmetric():
    lo, hi = torch.tensor([-1.0, -0.5, 0.0]), torch.tensor([3.0, 0.0, 2.0])
    scale, zero = grid_from_range(lo, hi, QuantSpec(4))
    assert torch.allclose(scale, (hi - lo) / 15)
    assert torch.equal(zero, torch.round(-lo / scale))
    # the end codes reach both ends of the range, up to the half step the integer zero point moves them
    assert torch.all(((0 - zero) * scale - lo).abs() <= scale / 2 + 1e-6)
    assert torch.all(((15 - zero) * scale - hi).abs() <= scale / 2 + 1e-6)


def test_grid_symmetric_is_centred():
    scale, zero = grid_from_range(torch.tensor([-2.0, -0.1]), torch.tensor([1.0, 4.0]), QuantSpec(8, symmetric=True))
    assert torch.allclose(scale, torch.tensor([2.0, 4.0]) / 127) and torch.equal(zero, torch.tensor([128.0, 128.0]))


def test_an_empty_range_does_not_divide_by_zero():
    scale, zero = grid_from_range(torch.tensor(0.0), torch.tensor(0.0), QuantSpec(4))
    assert scale.item() == pytest.approx(1e-8) and zero.item() == 0


def test_groups_round_trip_and_mask_a_short_last_group():
    spec = QuantSpec(4, group_size=64)
    w = weights(in_f=96)  # 64 + a short group of 32 (Moonshine's 288/416-wide layers at 64)
    grouped = to_groups(w, spec)
    assert grouped.shape == (6, 2, 64) and torch.equal(from_groups(grouped, 96), w)
    assert torch.equal(grouped[:, 1, 32:], torch.zeros(6, 32))
    mask = group_mask(96, spec)
    assert mask.shape == (2, 64) and mask.sum() == 96 and mask[1, 32:].sum() == 0


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("granularity", ["group", "channel", "tensor"])
def test_weight_round_trip_stays_on_the_grid(bits, symmetric, granularity):
    spec = QuantSpec(bits, symmetric=symmetric, granularity=granularity, group_size=32)
    w = weights()
    scale, zero = weight_qparams(w, spec)
    assert scale.shape == zero.shape == (6, spec.n_groups(96))
    if granularity == "tensor":
        assert torch.all(scale == scale.flatten()[0])
    codes = quantize_weight(w, scale, zero, spec)
    assert codes.dtype == torch.uint8 and int(codes.max()) <= spec.qmax
    back = dequantize_weight(codes, scale, zero, spec)
    step = to_groups(torch.ones_like(w), spec) * scale[..., None]
    assert torch.all((back - w).abs() <= from_groups(step, 96) / 2 + 1e-6)  # within half a step: nothing clipped
    assert torch.equal(fake_quant_weight(w, spec), back)


def test_clipping_shrinks_the_grid():
    spec = QuantSpec(4, group_size=32)
    full, _ = weight_qparams(weights(), spec)
    clipped, _ = weight_qparams(weights(), spec, clip=0.5)
    assert torch.allclose(clipped, full * 0.5)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
def test_pack_unpack_round_trip(bits):
    codes = torch.randint(0, 1 << bits, (5, 64), generator=torch.Generator().manual_seed(bits), dtype=torch.uint8)
    packed = pack_codes(codes, bits)
    width = {2: 2, 3: 4, 4: 4, 5: 8, 8: 8}[bits]  # 3 bits live in 4-bit containers, 5-7 in bytes
    assert packed.dtype == torch.uint8 and packed.shape == (5, 64 * width // 8)
    assert torch.equal(unpack_codes(packed, bits, 64), codes)


def test_pack_order_is_low_bits_first():
    # MatMulNBits order: element 2i in the low nibble of byte i
    assert pack_codes(torch.tensor([[1, 2]], dtype=torch.uint8), 4).item() == 0x21


def test_pack_rejects_a_ragged_row():
    with pytest.raises(QuantizationError, match="cannot be packed"):
        pack_codes(torch.zeros(1, 3, dtype=torch.uint8), 4)


@pytest.mark.parametrize("symmetric", [False, True])
def test_dynamic_activations_per_token(symmetric):
    spec = QuantSpec(8, symmetric=symmetric, dynamic=True)
    x = torch.stack([torch.linspace(-1, 3, 50), torch.linspace(-100, 20, 50)])
    y = fake_quant_activation(x, spec)
    # each token gets its own grid: the small-range token keeps its precision
    assert (y[0] - x[0]).abs().max() <= 4 / 255 and (y[1] - x[1]).abs().max() <= 120 / 255 * (2 if symmetric else 1)
    assert torch.equal(fake_quant_activation(x, QuantSpec(16)), x)


def test_static_activations_clip_to_the_calibrated_range():
    spec = QuantSpec(8, dynamic=False)
    scale, zero = grid_from_range(torch.tensor(-1.0), torch.tensor(1.0), spec)
    y = fake_quant_activation(torch.tensor([[-5.0, 0.0, 0.5, 5.0]]), spec, scale, zero)
    assert y[0, 0] == pytest.approx(-1.0, abs=scale.item()) and y[0, 3] == pytest.approx(1.0, abs=scale.item())


def test_spec_validation():
    with pytest.raises(QuantizationError, match="power of two"):
        QuantSpec(4, group_size=48).validate_weights()
    with pytest.raises(QuantizationError, match="weight bits"):
        QuantSpec(9).validate_weights()
    with pytest.raises(QuantizationError, match="activation bits"):
        QuantSpec(5).validate_activations()
    QuantSpec(3, granularity="channel").validate_weights()


def test_hqq_lowers_the_lp_error_of_the_shared_grid():
    # A heavy-tailed weight: HQQ's lp (p < 1) objective should beat min/max rounding on it, on the same grid. The
    # integer-zero variant: the default's real-valued zero point starts from the exact span, which on this synthetic
    # cube of a Gaussian (far more mass at 0 than real layers) is worse in lp; test_method_hqq checks real layers.
    w = weights(16, 128) ** 3
    spec, options = QuantSpec(3, group_size=64), HQQOptions(optimize_scale=True, float_zero=False)
    p = options.lp_norm

    def lp_error(scale, zero):
        return float(((dequantize_weight(quantize_weight(w, scale, zero, spec), scale, zero, spec) - w).abs() ** p).sum())

    scale, zero = hqq_qparams(w, spec, options)
    assert torch.equal(zero, zero.round()) and int(zero.max()) <= spec.qmax  # integer zero points
    assert lp_error(scale, zero) < lp_error(*weight_qparams(w, spec))
