"""A method's integer codes laid out as ONNX Runtime's `MatMulNBits` reads them, unchanged.

MatMulNBits takes B as [N, n_blocks, block_size·bits/8] bytes (element 2i in the low bits), scales as
[N·n_blocks] and zero points packed the same way along each row. A QuantLinear already stores
unsigned codes with one integer zero point per (row, group), so packing is only a re-layout:
3-bit codes sit in 4-bit containers (same values, same zero points), per-channel / per-tensor grids
become one block as wide as the next power of two ≥ K, and a ragged last group is zero-padded.
Scales are written as fp16 (the layer's values already are fp16 numbers), or, for a layer that keeps them
as quantized statistics (SpQR), as those statistics (`ScaleStats`), expanded by the graph at load time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edgeasr.errors import QuantizationError
from edgeasr.metrics.bits import block_size_for, storage_bits
from edgeasr.quant.spec import QuantSpec, pack_codes, quantize_weight, weight_qparams


@dataclass
class ScaleStats:
    """A layer's block scales kept as quantized statistics: value = code × step + min per `rows` rows."""

    codes: np.ndarray
    """uint8 [N, n_blocks] (their values fit `bits`)."""
    stats: np.ndarray
    """float16 [ceil(N / rows), n_blocks, 2]: (min, step)."""
    rows: int
    bits: int

    def packed_codes(self) -> np.ndarray:
        """[chunks · rows, ceil(n_blocks / 2)] uint8: two 4-bit codes per byte, rows padded to whole chunks."""
        pad = self.stats.shape[0] * self.rows - self.codes.shape[0]
        return _pack_rows(np.pad(self.codes, ((0, pad), (0, 0))), 4)

    @property
    def nbytes(self) -> int:
        return self.packed_codes().nbytes + self.stats.nbytes


@dataclass
class PackedWeight:
    """One weight matrix in MatMulNBits form."""

    code_bits: int
    """Bits of the method's grid (3 is stored in 4-bit containers)."""
    bits: int
    """Container width the kernel reads: 2, 4 or 8."""
    block_size: int
    k: int
    n: int
    data: np.ndarray
    """uint8 [N, n_blocks, block_size·bits/8]."""
    scales: np.ndarray
    """float32 [N, n_blocks] (flattened in the graph)."""
    zero_points: np.ndarray
    """uint8 [N, n_blocks] unpacked; `packed_zero_points` gives the kernel's layout. float16 when the method
    keeps real-valued zero points (HQQ): the kernel reads them unpacked, as floats."""
    scale_stats: ScaleStats | None = None
    """Set when the scales are stored as quantized statistics instead of fp16 values."""
    tail: "PackedWeight | None" = None
    """A ragged last group (K not a multiple of the group): its own one-block kernel on the last columns,
    so the main part needs no zero-padded columns (K = k + tail.k)."""

    @property
    def n_blocks(self) -> int:
        return self.scales.shape[1]

    @property
    def float_zero(self) -> bool:
        return self.zero_points.dtype == np.float16

    def packed_zero_points(self) -> np.ndarray:
        return self.zero_points if self.float_zero else _pack_rows(self.zero_points, self.bits)

    @property
    def nbytes(self) -> int:
        """Bytes the bundle stores: packed codes, fp16 scales (or their statistics), packed zero points."""
        scales = self.scale_stats.nbytes if self.scale_stats else self.scales.size * 2
        tail = self.tail.nbytes if self.tail else 0
        return self.data.nbytes + scales + self.packed_zero_points().nbytes + tail

    @property
    def k_total(self) -> int:
        return self.k + (self.tail.k if self.tail else 0)


def _pack_rows(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack each row of small integers `bits` wide (padding the row to whole bytes)."""
    per_byte = 8 // bits
    pad = -values.shape[1] % per_byte
    padded = np.pad(values, ((0, 0), (0, pad)))
    return pack_codes(torch.from_numpy(padded), bits).numpy()


def pack_quantized(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QuantSpec,
                   scale_stats: ScaleStats | None = None, float_zero: bool = False) -> PackedWeight:
    """Lay out QuantLinear codes [N, K], scales and zeros [N, groups] for MatMulNBits, values unchanged.

    A ragged last group (K = 288 in groups of 64) becomes a `tail` kernel of its own rather than a block
    padded with zero columns (11 % more code bytes on Moonshine's 288-wide layers).
    """
    n, k = codes.shape
    width = spec.group_width(k)
    if width < k and k % width:
        main = k - k % width
        stats = (None, None) if scale_stats is None else (
            ScaleStats(scale_stats.codes[:, :-1], scale_stats.stats[:, :-1], scale_stats.rows, scale_stats.bits),
            ScaleStats(scale_stats.codes[:, -1:], scale_stats.stats[:, -1:], scale_stats.rows, scale_stats.bits))
        head = pack_quantized(codes[:, :main], scale[:, :-1], zero[:, :-1], spec, stats[0], float_zero)
        head.tail = pack_quantized(codes[:, main:], scale[:, -1:], zero[:, -1:], spec, stats[1], float_zero)
        return head
    bits = storage_bits(spec.bits)
    block = block_size_for(spec.group_width(k), k)
    n_blocks = -(-k // block)
    if scale.shape != (n, n_blocks):
        raise QuantizationError(f"scales {tuple(scale.shape)} do not match {n_blocks} blocks of {block} over K={k}")
    padded = torch.nn.functional.pad(codes, (0, n_blocks * block - k))
    data = pack_codes(padded, bits).numpy().reshape(n, n_blocks, block * bits // 8)
    return PackedWeight(spec.bits, bits, block, k, n, data, scale.float().numpy().astype(np.float32),
                        zero.half().numpy() if float_zero else zero.to(torch.uint8).numpy(), scale_stats)


def pack_table(table: torch.Tensor, bits: int, group_size: int) -> PackedWeight:
    """Quantize the tied token table [vocab, d] (min/max per group) for the head and the lookup, in blocks
    of `group_size` (a ragged last block is its own tail kernel, as for any layer).
    """
    d = table.shape[1]
    block = min(group_size, 1 << (d.bit_length() - 1))  # a ragged last block becomes a tail kernel
    if block < 16 or (d % block and d % block % 16):
        raise QuantizationError(f"cannot quantize a {d}-wide token table in blocks of {block} (and a last block "
                                "of a multiple of 16)")
    spec = QuantSpec(bits, symmetric=False, granularity="group", group_size=block)
    scale, zero = weight_qparams(table, spec)
    scale = scale.half().float()  # stored as fp16: quantize against the stored values
    return pack_quantized(quantize_weight(table, scale, zero, spec), scale, zero, spec)


def unpack(packed: PackedWeight) -> np.ndarray:
    """Codes [N, K] read back from the packed bytes (to prove they are the method's own)."""
    from edgeasr.quant.spec import unpack_codes

    flat = torch.from_numpy(np.array(packed.data.reshape(packed.n, -1)))
    codes = unpack_codes(flat, packed.bits, packed.k).numpy()
    return codes if packed.tail is None else np.concatenate([codes, unpack(packed.tail)], axis=1)
