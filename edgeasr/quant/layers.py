"""QuantLinear: the one quantized layer every method produces.

It stores what deployment needs — integer weight codes with per-group scales and zero points — plus the
extras some methods add on top of plain grids:
  * `in_scale`   per-input-channel divisor applied to activations (AWQ/SmoothQuant/OS+ when the previous
                 op cannot absorb it, e.g. fc2 behind a GELU);
  * `in_shift`   per-input-channel shift subtracted from activations (OS+ when no bias can absorb it);
  * `hadamard`   an online Hadamard rotation of the input (QuaRot, for inputs no previous op can rotate);
  * `outlier_idx` / `outlier_weight`  input channels kept in FP and computed densely (QUIK);
  * `sparse_idx` / `sparse_val`       a sparse set of FP weights added to the dequantized grid (SpQR);
  * `scale_codes` / `scale_stats` (and `zero_codes` / `zero_stats`)  the group scales (zero points) kept as
                 quantized statistics: `stat_bits`-wide codes with one fp16 (min, step) pair per `stat_group`
                 output rows (SpQR). Then `scale` (`zero`) is derived from them, never stored itself.
The forward pass is fake-quant (dequantized fp32 weights cached) so accuracy studies are exact; the
packed execution lives in the exported bundle. Plain fp scales are rounded to fp16 on construction, the
width a bundle stores them at, so the bundle computes with exactly the checkpoint's values. What a layer
costs is computed by `edgeasr.metrics.bits` from `grid_layout()`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeasr.quant.hadamard import hadamard_transform
from edgeasr.metrics.bits import GridLayout, LayerBits, StatCodes, bundle_layer_bytes, layer_bits
from edgeasr.quant.spec import QuantSpec, dequantize_weight, fake_quant_activation


class QuantLinear(nn.Module):
    """A Linear whose weight lives as integer codes; activations optionally fake-quantized on the way in."""

    def __init__(self, in_features: int, out_features: int, w_spec: QuantSpec, a_spec: QuantSpec,
                 bias: bool = True, n_outliers: int = 0, n_sparse: int = 0, has_in_scale: bool = False,
                 has_in_shift: bool = False, hadamard: bool = False, static_act: bool = False,
                 stat_bits: int = 0, stat_group: int = 16, zero_stats: bool = False, float_zero: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.w_spec, self.a_spec = w_spec, a_spec
        n_groups = w_spec.n_groups(in_features)
        self.stat_bits, self.stat_group = stat_bits, stat_group
        chunks = -(-out_features // stat_group)
        self.register_buffer("codes", torch.zeros(out_features, in_features, dtype=torch.uint8))
        # Derived (not saved) when stored as quantized statistics: the checkpoint holds their codes instead.
        self.register_buffer("scale", torch.ones(out_features, n_groups), persistent=not stat_bits)
        # Integer zero points on the grid, or real-valued ones in fp16 as the bundle stores them (HQQ).
        self.register_buffer("zero", torch.zeros(out_features, n_groups, dtype=torch.float16 if float_zero else torch.uint8),
                             persistent=not zero_stats)
        stat = lambda on, *shape, dtype: torch.zeros(*shape, dtype=dtype) if on else None
        self.register_buffer("scale_codes", stat(stat_bits, out_features, n_groups, dtype=torch.uint8))
        self.register_buffer("scale_stats", stat(stat_bits, chunks, n_groups, 2, dtype=torch.float16))
        self.register_buffer("zero_codes", stat(zero_stats, out_features, n_groups, dtype=torch.uint8))
        self.register_buffer("zero_stats", stat(zero_stats, chunks, n_groups, 2, dtype=torch.float16))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.register_buffer("in_scale", torch.ones(in_features) if has_in_scale else None)
        self.register_buffer("in_shift", torch.zeros(in_features) if has_in_shift else None)
        self.register_buffer("outlier_idx", torch.zeros(n_outliers, dtype=torch.long) if n_outliers else None)
        self.register_buffer("outlier_weight", torch.zeros(out_features, n_outliers) if n_outliers else None)
        # Stored as the bundle stores them: 16-bit row/column indices and fp16 values (metrics.bits).
        self.register_buffer("sparse_idx", torch.zeros(2, n_sparse, dtype=torch.int16) if n_sparse else None)
        self.register_buffer("sparse_val", torch.zeros(n_sparse, dtype=torch.float16) if n_sparse else None)
        self.register_buffer("act_scale", torch.ones(1) if static_act else None)
        self.register_buffer("act_zero", torch.zeros(1) if static_act else None)
        self.hadamard = hadamard
        self._weight: torch.Tensor | None = None

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_codes(cls, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bias: torch.Tensor | None,
                   w_spec: QuantSpec, a_spec: QuantSpec, **extras: torch.Tensor | bool | None) -> "QuantLinear":
        """Build from a method's codes; `extras` fills the optional buffers by name (None leaves them off).
        A floating-point `zero` with `float_zero=True` in `extras` is kept real-valued (fp16), else rounded."""
        out_f, in_f = codes.shape
        outlier_idx, sparse_idx = extras.get("outlier_idx"), extras.get("sparse_idx")
        scale_stats, zero_stats = extras.get("scale_stats"), extras.get("zero_stats")
        layer = cls(in_f, out_f, w_spec, a_spec, bias is not None,
                    n_outliers=0 if outlier_idx is None else outlier_idx.numel(),
                    n_sparse=0 if sparse_idx is None else sparse_idx.shape[1],
                    has_in_scale=extras.get("in_scale") is not None, has_in_shift=extras.get("in_shift") is not None,
                    hadamard=bool(extras.get("hadamard")), static_act=extras.get("act_scale") is not None,
                    stat_bits=int(extras.get("stat_bits") or 0), stat_group=int(extras.get("stat_group") or 16),
                    zero_stats=zero_stats is not None, float_zero=bool(extras.get("float_zero")))
        if sparse_idx is not None and max(in_f, out_f) > torch.iinfo(torch.int16).max:
            raise ValueError(f"a {out_f}x{in_f} layer is too wide for 16-bit sparse indices")
        if scale_stats is not None and out_f > layer.stat_group * scale_stats.shape[0]:
            raise ValueError(f"{scale_stats.shape[0]} statistic chunks of {layer.stat_group} rows do not cover {out_f} rows")
        layer.codes.copy_(codes)
        # fp16 is what a bundle stores; statistics kept as codes derive their values below instead.
        layer.scale.copy_(scale.half().float() if scale_stats is None else scale)
        layer.zero.copy_(zero.half() if layer.float_zero else zero.round().to(torch.uint8))
        if bias is not None:
            layer.bias.copy_(bias)
        for name, value in extras.items():
            if isinstance(value, torch.Tensor):
                getattr(layer, name).copy_(value)
        layer.derive_statistics()
        return layer

    def derive_statistics(self) -> None:
        """Recompute `scale` / `zero` from their quantized statistics (a no-op for plain fp16 scales)."""
        if self.scale_codes is not None:
            self.scale.copy_(dequantize_stat(self.scale_codes, self.scale_stats, self.stat_group))
        if self.zero_codes is not None:
            zero = dequantize_stat(self.zero_codes, self.zero_stats, self.stat_group).round()
            self.zero.copy_(zero.clamp(0, self.w_spec.qmax).to(torch.uint8))
        self._weight = None

    @property
    def float_zero(self) -> bool:
        return self.zero.dtype.is_floating_point

    # ---- forward ------------------------------------------------------------------------------
    def dequantized_weight(self) -> torch.Tensor:
        """The effective fp32 weight over the quantized (non-outlier) columns, sparse corrections included."""
        w = dequantize_weight(self.codes, self.scale, self.zero.float(), self.w_spec)
        if self.sparse_val is not None:
            rows, cols = self.sparse_idx.long()
            w = w.index_put((rows, cols), self.sparse_val.float(), accumulate=True)
        return w

    def _cached_weight(self) -> torch.Tensor:
        if self._weight is None or self._weight.device != self.codes.device:
            self._weight = self.dequantized_weight()
        return self._weight

    def _apply(self, fn, recurse=True):  # drop the cache when buffers move or change dtype
        self._weight = None
        return super()._apply(fn, recurse)

    def load_state_dict(self, *args, **kwargs):
        self._weight = None
        return super().load_state_dict(*args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):  # a parent's load_state_dict reaches each layer here
        super()._load_from_state_dict(*args, **kwargs)
        self.derive_statistics()

    def transform_input(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel shift/scale and rotation that precede the matmul (no quantization)."""
        if self.in_shift is not None:
            x = x - self.in_shift
        if self.in_scale is not None:
            x = x / self.in_scale
        if self.hadamard:
            x = hadamard_transform(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transform_input(x)
        out = None
        if self.outlier_idx is not None:
            out = x[..., self.outlier_idx] @ self.outlier_weight.T
            x = x.index_fill(-1, self.outlier_idx, 0.0)  # outliers must not stretch the activation grid
        x = fake_quant_activation(x, self.a_spec, self.act_scale, self.act_zero)
        y = F.linear(x, self._cached_weight(), self.bias)
        return y if out is None else y + out

    # ---- accounting -----------------------------------------------------------------------------
    def grid_layout(self) -> GridLayout:
        """The counts `edgeasr.metrics.bits` prices this layer from."""
        stats = lambda on: StatCodes(self.stat_bits, self.stat_group) if on else None
        return GridLayout(self.out_features, self.in_features, self.w_spec.bits,
                          self.w_spec.group_width(self.in_features), self.w_spec.symmetric,
                          scale_stats=stats(self.scale_codes is not None), zero_stats=stats(self.zero_codes is not None),
                          float_zero=self.float_zero,
                          n_sparse=0 if self.sparse_val is None else self.sparse_val.numel(),
                          n_fp_channels=0 if self.outlier_idx is None else self.outlier_idx.numel(),
                          n_channel_vectors=(self.in_scale is not None) + (self.in_shift is not None),
                          bias=self.bias is not None)

    def storage_bits(self) -> LayerBits:
        """Effective bits of this layer by part (codes, scales, zeros, sparse, extras)."""
        return layer_bits(self.grid_layout())

    def weight_bytes(self) -> int:
        """Bytes an exported bundle holds for this layer (packed codes, fp16 scales, zeros, bias, extras)."""
        return bundle_layer_bytes(self.grid_layout())

    def extra_repr(self) -> str:
        extras = [n for n in ("in_scale", "in_shift", "outlier_idx", "sparse_idx", "act_scale") if getattr(self, n) is not None]
        return (f"in={self.in_features}, out={self.out_features}, w{self.w_spec.bits} a{self.a_spec.bits}, "
                f"group={self.w_spec.group_width(self.in_features)}{', hadamard' if self.hadamard else ''}"
                f"{', ' + ', '.join(extras) if extras else ''}")


def dequantize_stat(codes: torch.Tensor, stats: torch.Tensor, rows: int) -> torch.Tensor:
    """Values [out, groups] of quantized statistics: code × step + min, with one fp16 (min, step) pair per
    `rows` output rows. Two separate fp32 operations, as the bundle's graph does them (bit-exact there too)."""
    chunk = torch.arange(codes.shape[0]) // rows
    lo, step = stats[chunk, :, 0].float(), stats[chunk, :, 1].float()
    return codes.float() * step + lo
