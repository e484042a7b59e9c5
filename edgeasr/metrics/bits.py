"""Effective bits per weight and stored bytes: the one place that says what a quantized layer costs.

Two views of the same layer, both from counts only (no torch, so a bundle's records use them too):

* **Effective bits per weight** (`LayerBits`) — what the method's representation needs, the number every
  comparison of methods is made at: codes at the grid's own width (3 bits are 3), scales in fp16, zero
  points at the grid width (fp16 when the method keeps them real-valued, HQQ; none when symmetric), a
  method's quantized statistics as their codes plus their second-level fp16 statistics (SpQR), sparse FP
  outliers at `SPARSE_ENTRY_BITS` each, FP outlier channels (QUIK) at 16 bits per weight plus a 16-bit
  index, per-channel input shifts/scales at 16 bits. Biases are
  not weights of the grid and are left out; so is an online rotation that is computed, not stored.
* **Bundle bytes** (`bundle_layer_bytes`) — what an exported bundle holds for the layer: codes in the
  kernel's container width (2, 4 or 8 bits; 3-bit codes sit in 4-bit containers), K padded to whole
  blocks (a ragged last group is a kernel of its own, padded to a power of two ≥ 16), fp16 scales, zero
  points packed at the container width (MatMulNBits always reads them; fp16 when real-valued), an
  fp32 bias, fp32 per-channel extras, and SpQR's statistics as 4-bit containers plus fp16 pairs.

A model's effective bits are Σ bits / Σ weights over its quantized layers (`effective_bits`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

SCALE_BITS = 16
"""A scale (or a second-level statistic) is stored as fp16."""
SPARSE_ENTRY_BITS = 48
"""One sparse FP outlier (SpQR): fp16 value + 16-bit row + 16-bit column, as checkpoint and bundle store it."""
CHANNEL_INDEX_BITS = 16
"""Index of one FP outlier input channel (QUIK)."""
FP32_BYTES = 4
"""Width of the unquantized tensors a bundle keeps (biases, norms, per-channel extras)."""
DEFAULT_HEAD_BITS = 4
"""Bits of the tied token table / output head in an exported bundle of a quantized checkpoint."""
DEFAULT_HEAD_BLOCK = 64
"""Largest block of the packed head (shrunk to a power of two dividing the model width)."""
FRONT_END_BITS = 8
"""Bits of the conv front end and the position tables in a bundle of a quantized checkpoint (int8, one
fp32 scale per row)."""


def storage_bits(bits: int) -> int:
    """Bits a code occupies when packed for the kernels: the smallest of 2, 4, 8 that holds it."""
    return next(w for w in (2, 4, 8) if w >= bits)


@dataclass(frozen=True)
class StatCodes:
    """A statistic quantized once more (SpQR): `bits`-wide codes, one fp16 (min, step) pair per `rows` rows."""

    bits: int
    rows: int

    def bits_for(self, out: int, groups: int) -> int:
        return out * groups * self.bits + math.ceil(out / self.rows) * groups * 2 * SCALE_BITS

    def bundle_bytes(self, out: int, groups: int) -> int:
        """Codes in 4-bit containers (two per byte along each row) plus the fp16 pairs."""
        return out * math.ceil(groups / 2) + math.ceil(out / self.rows) * groups * 2 * (SCALE_BITS // 8)


@dataclass(frozen=True)
class GridLayout:
    """Counts that decide what one quantized weight matrix [out, in] stores."""

    out_features: int
    in_features: int
    bits: int
    group_width: int
    """Input columns per scale (the whole row for per-channel grids)."""
    symmetric: bool = False
    scale_stats: StatCodes | None = None
    """The scales kept as quantized statistics (SpQR), else fp16."""
    zero_stats: StatCodes | None = None
    """The zero points kept as quantized statistics (SpQR), else at the grid width."""
    float_zero: bool = False
    """The zero points are real numbers stored in fp16 (HQQ), not integers on the grid."""
    n_sparse: int = 0
    """Sparse FP outlier weights (SpQR)."""
    n_fp_channels: int = 0
    """Input channels kept in FP (QUIK)."""
    n_channel_vectors: int = 0
    """Per-input-channel vectors (input scale, input shift)."""
    bias: bool = False

    @property
    def groups(self) -> int:
        return -(-self.in_features // self.group_width)

    @property
    def weights(self) -> int:
        return self.out_features * self.in_features


@dataclass(frozen=True)
class LayerBits:
    """Bits of one quantized layer by part (the effective-bits convention above)."""

    weights: int
    codes: int
    scales: int
    zeros: int
    sparse: int
    extras: int

    @property
    def total(self) -> int:
        return self.codes + self.scales + self.zeros + self.sparse + self.extras

    @property
    def per_weight(self) -> float:
        return self.total / self.weights

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total, "per_weight": round(self.per_weight, 4)}


def layer_bits(g: GridLayout) -> LayerBits:
    """Effective bits of one quantized layer, by part."""
    out, groups = g.out_features, g.groups
    scales = g.scale_stats.bits_for(out, groups) if g.scale_stats else out * groups * SCALE_BITS
    if g.symmetric:
        zeros = 0
    else:
        zeros = g.zero_stats.bits_for(out, groups) if g.zero_stats else out * groups * _zero_bits(g, g.bits)
    extras = (g.n_fp_channels * (out * 16 + CHANNEL_INDEX_BITS)
              + g.n_channel_vectors * g.in_features * 16)
    codes = out * (g.in_features - g.n_fp_channels) * g.bits  # FP channels need no codes
    return LayerBits(g.weights, codes, scales, zeros, g.n_sparse * SPARSE_ENTRY_BITS, extras)


def _zero_bits(g: GridLayout, width: int) -> int:
    """Bits of one zero point: fp16 when real-valued, else the grid's (or container's) width."""
    return SCALE_BITS if g.float_zero else width


def block_size_for(group_width: int, k: int) -> int:
    """The kernel's block: the group itself, or for a whole-row group the next power of two ≥ K."""
    if group_width < k:
        return group_width
    return max(16, 1 << (k - 1).bit_length())


def _kernel_bytes(out: int, k: int, group_width: int, width: int, stats: StatCodes | None, zero_bits: int) -> int:
    """Codes, scales and zero points of one MatMulNBits kernel over K = k (a ragged last group: its own kernel)."""
    if group_width < k and k % group_width:
        main = k - k % group_width
        return (_kernel_bytes(out, main, group_width, width, stats, zero_bits)
                + _kernel_bytes(out, k - main, group_width, width, stats, zero_bits))
    block = block_size_for(group_width, k)
    blocks = -(-k // block)
    scales = stats.bundle_bytes(out, blocks) if stats else out * blocks * SCALE_BITS // 8
    return out * blocks * block * width // 8 + scales + out * math.ceil(blocks * zero_bits / 8)


def bundle_layer_bytes(g: GridLayout) -> int:
    """Bytes an exported bundle holds for one quantized layer (see the module docstring)."""
    out, k = g.out_features, g.in_features
    width = storage_bits(g.bits)
    kernel = _kernel_bytes(out, k, g.group_width, width, g.scale_stats, _zero_bits(g, width))
    extras = (g.n_fp_channels * (out + 2) * FP32_BYTES  # FP columns + int64 channel index
              + g.n_channel_vectors * k * FP32_BYTES + (out * FP32_BYTES if g.bias else 0))
    return kernel + g.n_sparse * SPARSE_ENTRY_BITS // 8 + extras


def effective_bits(layers: list[LayerBits]) -> float | None:
    """Σ bits / Σ weights over the quantized layers; None for a model with none."""
    weights = sum(l.weights for l in layers)
    return sum(l.total for l in layers) / weights if weights else None


def head_layout(vocab: int, width: int, bits: int, block: int = DEFAULT_HEAD_BLOCK) -> GridLayout:
    """The packed head's grid: min/max per block (`export.packing.pack_table`)."""
    return GridLayout(vocab, width, bits, min(block, 1 << (width.bit_length() - 1)))


def row_int8_bytes(rows: int, elements: int) -> int:
    """A tensor stored as int8 with one fp32 scale per row (the front end's DequantizeLinear)."""
    return elements + rows * FP32_BYTES
