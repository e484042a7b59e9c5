"""QuantLinear: the one quantized layer every method produces.

It stores what deployment needs — integer weight codes with per-group scales and zero points — plus the
extras some methods add on top of plain grids:
  * `in_scale`   per-input-channel divisor applied to activations (AWQ/SmoothQuant/OS+ when the previous
                 op cannot absorb it, e.g. fc2 behind a GELU);
  * `in_shift`   per-input-channel shift subtracted from activations (OS+ when no bias can absorb it);
  * `hadamard`   an online Hadamard rotation of the input (QuaRot, for inputs no previous op can rotate);
  * `outlier_idx` / `outlier_weight`  input channels kept in FP and computed densely (QUIK);
  * `sparse_idx` / `sparse_val`       a sparse set of FP weights added to the dequantized grid (SpQR).
The forward pass is fake-quant (dequantized fp32 weights cached) so accuracy studies are exact; the
packed execution lives in the exported bundle.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from edgeasr.quant.spec import QuantSpec, dequantize_weight, fake_quant_activation, storage_bits


@functools.lru_cache(maxsize=None)
@torch.inference_mode(False)  # a normal tensor even when first built under inference mode (usable with autograd)
def hadamard_matrix(n: int) -> torch.Tensor:
    """Orthonormal Hadamard-like matrix of size n = 2^k · m (m with a known small construction or 1).

    For sizes that are not a power of two (Whisper 384, Moonshine 288/416) the Kronecker product of a
    power-of-two Sylvester Hadamard with a random orthogonal block of the odd factor keeps orthogonality.
    Cached (QuantLinear asks for it on every forward): treat the returned tensor as read-only.
    """
    power = n & -n
    h = torch.ones(1, 1)
    while h.shape[0] < power:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    rest = n // power
    if rest > 1:
        gen = torch.Generator().manual_seed(rest)
        q, _ = torch.linalg.qr(torch.randn(rest, rest, generator=gen, dtype=torch.float64))
        h = torch.kron(q.float().contiguous(), h)  # QR's Q is column-major; kron needs contiguous
        return h / math.sqrt(power)
    return h / math.sqrt(n)


class QuantLinear(nn.Module):
    """A Linear whose weight lives as integer codes; activations optionally fake-quantized on the way in."""

    def __init__(self, in_features: int, out_features: int, w_spec: QuantSpec, a_spec: QuantSpec,
                 bias: bool = True, n_outliers: int = 0, n_sparse: int = 0, has_in_scale: bool = False,
                 has_in_shift: bool = False, hadamard: bool = False, static_act: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.w_spec, self.a_spec = w_spec, a_spec
        n_groups = w_spec.n_groups(in_features)
        self.register_buffer("codes", torch.zeros(out_features, in_features, dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(out_features, n_groups))
        self.register_buffer("zero", torch.zeros(out_features, n_groups, dtype=torch.uint8))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.register_buffer("in_scale", torch.ones(in_features) if has_in_scale else None)
        self.register_buffer("in_shift", torch.zeros(in_features) if has_in_shift else None)
        self.register_buffer("outlier_idx", torch.zeros(n_outliers, dtype=torch.long) if n_outliers else None)
        self.register_buffer("outlier_weight", torch.zeros(out_features, n_outliers) if n_outliers else None)
        self.register_buffer("sparse_idx", torch.zeros(2, n_sparse, dtype=torch.long) if n_sparse else None)
        self.register_buffer("sparse_val", torch.zeros(n_sparse) if n_sparse else None)
        self.register_buffer("act_scale", torch.ones(1) if static_act else None)
        self.register_buffer("act_zero", torch.zeros(1) if static_act else None)
        self.hadamard = hadamard
        self._weight: torch.Tensor | None = None

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_codes(cls, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bias: torch.Tensor | None,
                   w_spec: QuantSpec, a_spec: QuantSpec, **extras: torch.Tensor | bool | None) -> "QuantLinear":
        """Build from a method's codes; `extras` fills the optional buffers by name (None leaves them off)."""
        out_f, in_f = codes.shape
        outlier_idx, sparse_idx = extras.get("outlier_idx"), extras.get("sparse_idx")
        layer = cls(in_f, out_f, w_spec, a_spec, bias is not None,
                    n_outliers=0 if outlier_idx is None else outlier_idx.numel(),
                    n_sparse=0 if sparse_idx is None else sparse_idx.shape[1],
                    has_in_scale=extras.get("in_scale") is not None, has_in_shift=extras.get("in_shift") is not None,
                    hadamard=bool(extras.get("hadamard")), static_act=extras.get("act_scale") is not None)
        layer.codes.copy_(codes)
        layer.scale.copy_(scale)
        layer.zero.copy_(zero.round().to(torch.uint8))
        if bias is not None:
            layer.bias.copy_(bias)
        for name, value in extras.items():
            if isinstance(value, torch.Tensor):
                getattr(layer, name).copy_(value)
        return layer

    # ---- forward ------------------------------------------------------------------------------
    def dequantized_weight(self) -> torch.Tensor:
        """The effective fp32 weight over the quantized (non-outlier) columns, sparse corrections included."""
        w = dequantize_weight(self.codes, self.scale, self.zero.float(), self.w_spec)
        if self.sparse_val is not None:
            w = w.index_put((self.sparse_idx[0], self.sparse_idx[1]), self.sparse_val, accumulate=True)
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

    def transform_input(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel shift/scale and rotation that precede the matmul (no quantization)."""
        if self.in_shift is not None:
            x = x - self.in_shift
        if self.in_scale is not None:
            x = x / self.in_scale
        if self.hadamard:
            x = x @ hadamard_matrix(self.in_features).to(x)
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
    def weight_bytes(self) -> int:
        """Bytes the weights occupy packed: codes at storage width, fp16 scales, zero points, extras."""
        n_groups = self.scale.numel()
        zeros = 0 if self.w_spec.symmetric else math.ceil(n_groups * self.w_spec.bits / 8)
        total = math.ceil(self.codes.numel() * storage_bits(self.w_spec.bits) / 8) + 2 * n_groups + zeros
        if self.bias is not None:
            total += 4 * self.bias.numel()
        for extra in (self.in_scale, self.in_shift):
            if extra is not None:
                total += 2 * extra.numel()
        if self.outlier_weight is not None:
            total += 2 * self.outlier_weight.numel() + 4 * self.outlier_idx.numel()
        if self.sparse_val is not None:
            total += 2 * self.sparse_val.numel() + 4 * self.sparse_val.numel()  # fp16 value + packed 32-bit index
        return total

    def extra_repr(self) -> str:
        extras = [n for n in ("in_scale", "in_shift", "outlier_idx", "sparse_idx", "act_scale") if getattr(self, n) is not None]
        return (f"in={self.in_features}, out={self.out_features}, w{self.w_spec.bits} a{self.a_spec.bits}, "
                f"group={self.w_spec.group_width(self.in_features)}{', hadamard' if self.hadamard else ''}"
                f"{', ' + ', '.join(extras) if extras else ''}")
