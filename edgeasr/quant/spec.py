"""Quantization specs and the integer-grid maths every method shares.

Codes are always stored unsigned in [0, 2^bits - 1] with an integer zero point per group, so a symmetric
grid is the special case zero = 2^(bits-1). That is the layout ONNX Runtime's MatMulNBits reads, so an
exported bundle carries a method's codes unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch

from edgeasr.errors import QuantizationError
from edgeasr.metrics.bits import storage_bits  # noqa: F401  (re-exported: the one definition lives in metrics)

Granularity = Literal["tensor", "channel", "group"]
WEIGHT_BITS = (2, 3, 4, 5, 6, 7, 8, 16)
ACT_BITS = (4, 6, 8, 16)


@dataclass(frozen=True)
class QuantSpec:
    """How one kind of tensor (weights or activations) is put on an integer grid."""

    bits: int = 16
    """Bit-width; 16 means left in floating point."""
    symmetric: bool = False
    """Symmetric grid around zero (zero point fixed at mid-range) instead of min/max asymmetric."""
    granularity: Granularity = "group"
    """Weights: one scale per tensor, per output channel, or per group of input columns."""
    group_size: int = 128
    """Input columns sharing a scale when granularity is "group"."""
    dynamic: bool = True
    """Activations: scale computed per token at run time (True) or calibrated once (False)."""

    @property
    def enabled(self) -> bool:
        return self.bits < 16

    @property
    def qmax(self) -> int:
        return (1 << self.bits) - 1

    def group_width(self, in_features: int) -> int:
        if self.granularity == "group":
            return self.group_size
        return in_features  # one "group" spans the row: per channel, and per tensor shares it across rows

    def n_groups(self, in_features: int) -> int:
        return -(-in_features // self.group_width(in_features))

    def validate_weights(self) -> None:
        """Bits in range; group size a power of two ≥ 16 (what packed kernels such as MatMulNBits accept).

        A width that is not a multiple of the group size gets a shorter last group (zero-padded when
        packed), so --group-size 64 works on Moonshine's 288/416-wide layers.
        """
        if self.bits not in WEIGHT_BITS:
            raise QuantizationError(f"weight bits must be one of {WEIGHT_BITS[:-1]} (or 16 = off), got {self.bits}")
        if self.granularity == "group" and (self.group_size < 16 or self.group_size & (self.group_size - 1)):
            raise QuantizationError(
                f"group size must be a power of two ≥ 16 (16, 32, 64, 128, ...) or 0 for per-channel; got {self.group_size}")

    def validate_activations(self) -> None:
        if self.bits not in ACT_BITS:
            raise QuantizationError(f"activation bits must be one of {ACT_BITS}, got {self.bits}")

    def with_bits(self, bits: int) -> "QuantSpec":
        return replace(self, bits=bits)


def to_groups(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """View [out, in] as [out, groups, g]; a short last group is zero-padded (zeros never move min/max,
    which always include 0)."""
    out_f, in_f = w.shape
    g = spec.group_width(in_f)
    pad = -in_f % g
    if pad:
        w = torch.nn.functional.pad(w, (0, pad))
    return w.reshape(out_f, -1, g)


def from_groups(grouped: torch.Tensor, in_features: int) -> torch.Tensor:
    """Undo `to_groups`: [out, groups, g] back to [out, in], the padding dropped."""
    return grouped.reshape(grouped.shape[0], -1)[:, :in_features]


def group_mask(in_features: int, spec: QuantSpec) -> torch.Tensor:
    """[groups, g]: 1 on real columns, 0 on the zero padding `to_groups` adds to a short last group."""
    g = spec.group_width(in_features)
    mask = torch.ones(in_features + (-in_features % g))
    mask[in_features:] = 0
    return mask.reshape(-1, g)


def grid_from_range(lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec,
                    rounding: Callable[[torch.Tensor], torch.Tensor] = torch.round) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of the grid covering [lo, hi] (lo ≤ 0 ≤ hi, any shape): the one place the grid
    formula is written, for weights (per group), activations (per token or calibrated) and every method.

    Asymmetric: (hi - lo) over 2^bits - 1 steps, zero = round(-lo / scale). Symmetric: max(-lo, hi) over
    2^(bits-1) - 1 steps, zero fixed at mid-range. `rounding` lets a trained method pass a straight-through
    round so the zero point stays differentiable.
    """
    if spec.symmetric:
        half = 1 << (spec.bits - 1)
        scale = (torch.maximum(-lo, hi) / max(half - 1, 1)).clamp(min=1e-8)
        return scale, torch.full_like(scale, float(half))
    scale = ((hi - lo) / spec.qmax).clamp(min=1e-8)
    return scale, rounding(-lo / scale).clamp(0, spec.qmax)


def weight_qparams(w: torch.Tensor, spec: QuantSpec, clip: torch.Tensor | float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point per (row, group) from the min/max of each group, shrunk by `clip` (≤ 1)."""
    grouped = to_groups(w.float(), spec)
    lo = grouped.amin(dim=-1).clamp(max=0) * clip
    hi = grouped.amax(dim=-1).clamp(min=0) * clip
    if spec.granularity == "tensor":
        lo, hi = lo.amin().expand_as(lo), hi.amax().expand_as(hi)
    return grid_from_range(lo, hi, spec)


def quantize_groups(grouped: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Integer codes (as floats) of grouped weights [out, groups, g] on per-group scale/zero [out, groups]."""
    return torch.round(grouped / scale[..., None] + zero[..., None]).clamp(0, spec.qmax)


def dequantize_groups(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Grouped codes [out, groups, g] back to values with per-group scale/zero [out, groups]."""
    return (codes - zero[..., None]) * scale[..., None]


def quantize_weight(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Integer codes (uint8) of `w` [out, in] on the grid given by per-group scale/zero [out, n_groups]."""
    codes = quantize_groups(to_groups(w.float(), spec), scale, zero, spec)
    return from_groups(codes, w.shape[1]).to(torch.uint8)


def dequantize_weight(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    return from_groups(dequantize_groups(to_groups(codes.float(), spec), scale, zero), codes.shape[1])


def fake_quant_weight(w: torch.Tensor, spec: QuantSpec, clip: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Round-trip `w` through the grid (what RTN does, and what search-based methods score candidates with)."""
    scale, zero = weight_qparams(w, spec, clip)
    return dequantize_weight(quantize_weight(w, scale, zero, spec), scale, zero, spec).to(w.dtype)


def fake_quant_activation(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor | None = None,
                          zero: torch.Tensor | None = None) -> torch.Tensor:
    """Quantize-dequantize activations: per token when dynamic, else with the calibrated scale/zero."""
    if not spec.enabled:
        return x
    if spec.dynamic or scale is None:
        scale, zero = grid_from_range(x.amin(dim=-1, keepdim=True).clamp(max=0),
                                      x.amax(dim=-1, keepdim=True).clamp(min=0), spec)
        if spec.symmetric:  # signed codes on the same grid: no rounding of a mid-range offset per element
            half = 1 << (spec.bits - 1)
            return (torch.round(x / scale).clamp(-half, half - 1) * scale).to(x.dtype)
    q = torch.round(x / scale + zero).clamp(0, spec.qmax)
    return ((q - zero) * scale).to(x.dtype)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack uint8 codes [rows, cols] into bytes, element 2i in the low bits (MatMulNBits order).

    Bits 2, 4, 8 pack evenly; 3, 5, 6, 7 are stored in the next width that divides a byte (4 or 8).
    """
    width = storage_bits(bits)
    per_byte = 8 // width
    rows, cols = codes.shape
    if cols % per_byte:
        raise QuantizationError(f"{cols} columns cannot be packed {per_byte} per byte")
    grouped = codes.to(torch.int32).reshape(rows, cols // per_byte, per_byte)
    packed = torch.zeros(rows, cols // per_byte, dtype=torch.int32)
    for i in range(per_byte):
        packed |= grouped[..., i] << (i * width)
    return packed.to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    width = storage_bits(bits)
    per_byte = 8 // width
    mask = (1 << width) - 1
    values = [(packed.to(torch.int32) >> (i * width)) & mask for i in range(per_byte)]
    return torch.stack(values, dim=-1).reshape(packed.shape[0], -1)[:, :cols].to(torch.uint8)
