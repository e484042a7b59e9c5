"""SpQR (Dettmers et al., 2023): sparse-quantized representation.

Three ideas on top of the GPTQ loop (`_hessian.py`):
  * very small groups (β1 = 16 input columns) so the grid follows the weights closely;
  * the groups' scales and zero points are themselves quantized (3-bit, min/max over β2 = 16 output
    rows, with one fp16 scale/zero per second-level group), which keeps small groups cheap; scales
    are rounded up on their grid (a slightly coarser group grid instead of clipping its largest
    weights, which at W8 cost beckett a comma) and the zero point is refitted to the rounded scale;
  * a sparse set of FP outlier weights: a weight stays in FP when its GPTQ error
    ((w - q(w)) / U_jj)², the increase of the layer loss it causes, exceeds τ times the layer's mean
    var(w_j) / U_jj²; the group grids are fitted without likely outliers (leave-one-out: a weight whose
    exclusion lowers the group's Hessian-weighted error by more than the threshold is left out).

QuantLinear stores fp scales, so it receives the dequantized values of the quantized scales; the
outliers sit in `sparse_idx` / `sparse_val` with their codes at the zero point (dequantized 0).
`spqr_bits_per_weight` gives the true storage cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from edgeasr.quant.job import QuantJob, to_quant_linear
from edgeasr.quant.layers import QuantLinear
from edgeasr.quant.methods import register
from edgeasr.quant.methods._hessian import GPTQHooks, gptq_quantize, quantize_column, walk_linears
from edgeasr.quant.methods.gptq import GPTQOptions
from edgeasr.quant.spec import QuantSpec, weight_qparams


@dataclass(frozen=True)
class SpQROptions(GPTQOptions):
    group_size: int = 16
    """First-level group size β1 (input columns per scale); 0 = the recipe's group size."""
    stat_bits: int = 3
    """Bits of the quantized group scales and zero points (16 = keep them fp16)."""
    stat_group: int = 16
    """Output rows whose group scales (and zeros) share one second-level fp16 scale/zero (β2)."""
    outlier_threshold: float = 0.2
    """τ: a weight is an FP outlier when its GPTQ error exceeds τ × the layer's mean var(w)/U_jj²."""
    max_outlier_fraction: float = 0.01
    """Cap on the FP outliers per column, as a fraction of the output rows (the largest errors win)."""


def quantize_stat(values: torch.Tensor, bits: int, rows: int, up: bool = False) -> torch.Tensor:
    """Min/max-quantize a per-row statistic [out] in chunks of `rows` to `bits` and return it dequantized
    (`up`: round towards the chunk's max instead of to nearest)."""
    if bits >= 16:
        return values
    out = values.numel()
    pad = -out % rows
    v = torch.nn.functional.pad(values, (0, pad), value=float(values[-1])).reshape(-1, rows)
    lo, hi = v.amin(dim=1, keepdim=True), v.amax(dim=1, keepdim=True)
    step = ((hi - lo) / ((1 << bits) - 1)).clamp(min=1e-12)
    codes = torch.ceil((v - lo) / step - 1e-4) if up else torch.round((v - lo) / step)
    return (codes.clamp(0, (1 << bits) - 1) * step + lo).flatten()[:out]


class SpQRHooks(GPTQHooks):
    def __init__(self, spec: QuantSpec, options: SpQROptions) -> None:
        super().__init__(spec)
        self.options = options
        self.threshold = math.inf

    def start(self, weight: torch.Tensor, u_diag: torch.Tensor) -> None:
        if self.options.outlier_threshold > 0 and self.options.max_outlier_fraction > 0:
            scale = (weight.var(dim=0) / u_diag.square()).mean()
            self.threshold = float(self.options.outlier_threshold * scale)
        self.max_per_column = int(self.options.max_outlier_fraction * weight.shape[0])

    def _minmax(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale, zero = weight_qparams(w, self.row_spec)
        return scale[..., 0], zero[..., 0]

    def _without_outliers(self, w: torch.Tensor, u_diag: torch.Tensor) -> torch.Tensor:
        """The group with its likely outliers replaced by their row's mean, found leave-one-out."""
        out, n = w.shape
        if n < 3 or math.isinf(self.threshold) or self.max_per_column == 0:
            return w
        idx = torch.arange(n)
        loo = torch.stack([torch.cat([idx[:k], idx[k + 1:]]) for k in range(n)])  # [n, n-1]
        data = w[:, loo]  # [out, n, n-1]: each weight left out in turn
        weight = 1.0 / u_diag[loo].square()
        s, z = self._minmax(data.reshape(out * n, n - 1))
        rec = quantize_column(data.reshape(out * n, n - 1), s[:, None], z[:, None], self.spec.qmax).reshape_as(data)
        loo_err = ((rec - data).square() * weight).sum(-1)  # [out, n]
        s, z = self._minmax(w)
        base = ((quantize_column(w, s[:, None], z[:, None], self.spec.qmax) - w).square() / u_diag.square()).sum(-1)
        gain = base[:, None] - loo_err
        likely = gain > self.threshold
        if not likely.any():
            return w
        # no more per column than the outlier budget can keep in FP: the rest must fit on the grid
        budget = torch.topk(gain, min(self.max_per_column, out), dim=0).values[-1:]
        likely &= gain >= budget
        keep = (~likely).float()
        mean = (w * keep).sum(1, keepdim=True) / keep.sum(1, keepdim=True).clamp(min=1)
        return torch.where(likely, mean, w)

    def fit_group(self, w: torch.Tensor, u_diag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fitted = self._without_outliers(w, u_diag)
        scale, zero = self._minmax(fitted)
        bits, rows = self.options.stat_bits, self.options.stat_group
        if bits >= 16:
            return scale, zero
        # scales rounded up on their 3-bit grid: the group's grid may get coarser but never clips its range
        scale = quantize_stat(scale, bits, rows, up=True).clamp(min=1e-8)
        if self.spec.symmetric:
            return scale, zero
        zero = torch.round(-fitted.amin(dim=1).clamp(max=0) / scale).clamp(0, self.spec.qmax)
        if bits < self.spec.bits:  # zeros wider than the stat grid: quantize them too
            zero = quantize_stat(zero, bits, rows).round().clamp(0, self.spec.qmax)
        return scale, zero

    def column_outliers(self, col: torch.Tensor, q: torch.Tensor, u_jj: torch.Tensor) -> torch.Tensor | None:
        if math.isinf(self.threshold):
            return None
        err = ((col - q) / u_jj).square()
        mask = err > self.threshold
        if int(mask.sum()) > self.max_per_column:
            mask = torch.zeros_like(mask)
            if self.max_per_column:
                mask[torch.topk(err, self.max_per_column).indices] = True
        return mask


def spqr_bits_per_weight(layer: QuantLinear, options: SpQROptions) -> float:
    """Average storage bits per weight of a SpQR layer as the paper counts them: codes, quantized
    first-level stats plus an fp16 scale and zero per β2 rows for each quantized statistic, and 32 bits
    per outlier (fp16 value + 16-bit column index)."""
    out_f, in_f = layer.out_features, layer.in_features
    bits, stat = layer.w_spec.bits, options.stat_bits
    n_first = out_f * layer.scale.shape[1]
    n_second = math.ceil(out_f / options.stat_group) * layer.scale.shape[1]
    scales = n_first * stat + n_second * 32 if stat < 16 else n_first * 16
    if layer.w_spec.symmetric:
        zeros = 0
    elif stat < bits:
        zeros = n_first * stat + n_second * 32
    else:
        zeros = n_first * bits
    n_sparse = 0 if layer.sparse_val is None else layer.sparse_val.numel()
    return (out_f * in_f * bits + scales + zeros + 32 * n_sparse) / (out_f * in_f)


@register("spqr", SpQROptions, calibrated=True,
          summary="small groups with quantized scales + sparse FP outlier weights, on GPTQ (SpQR)")
def spqr(job: QuantJob, options: SpQROptions) -> None:
    spec = job.w_spec if not options.group_size else replace(job.w_spec, granularity="group",
                                                              group_size=options.group_size)
    spec.validate_weights()

    def quantize(_ctx, _path, linear, stats):
        result = gptq_quantize(linear.weight, stats.hessian, spec, damp=options.damp, block_size=options.block_size,
                               act_order=options.act_order, static_groups=options.static_groups,
                               hooks=SpQRHooks(spec, options))
        weight, extras = result.weight, {}
        if result.outliers is not None:
            rows, cols = result.outliers.nonzero(as_tuple=True)
            extras = {"sparse_idx": torch.stack([rows, cols]), "sparse_val": weight[rows, cols].clone()}
            weight = weight.masked_fill(result.outliers, 0.0)  # codes at the zero point: the sparse value adds back
        return to_quant_linear(linear, spec, job.a_spec, weight=weight, scale=result.scale, zero=result.zero, **extras)

    walk_linears(job, quantize, options.true_sequential)
