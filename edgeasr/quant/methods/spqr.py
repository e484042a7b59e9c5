"""SpQR (Dettmers et al., 2023): sparse-quantized representation.

Three ideas on top of the GPTQ loop (`_hessian.py`):
  * small groups (the paper's β1 = 16 input columns: run with `--group-size 16`; the recipe's group size
    is always the one used, so a g64 recipe is SpQR at g64 and its label says so);
  * the groups' scales are themselves quantized (3-bit, min/max over β2 = 16 output rows, with one fp16
    min and step per second-level group), which keeps small groups cheap; scales are rounded to the
    nearest point of that grid, as the reference implementation does (`round_scales_up` rounds them up
    instead: never clipping a group's largest weights, at the price of a grid up to one 3-bit step coarser,
    which on held-out speech cost whisper-tiny.en W4 g64 0.8 points, docs/study-heldout.md), and the zero
    point is refitted to the rounded scale. Zero points are quantized the same way
    only where that is cheaper than storing them at the grid width (3 + 32/16 = 5 bits per group, so at
    W6 and up; at W4 a 4-bit zero point is both cheaper and exact);
  * a sparse set of FP outlier weights: a weight stays in FP when its GPTQ error
    ((w - q(w)) / U_jj)², the increase of the layer loss it causes, exceeds τ times the layer's mean
    var(w_j) / U_jj²; the group grids are fitted without likely outliers (leave-one-out: a weight whose
    exclusion lowers the group's Hessian-weighted error by more than the threshold is left out).

The statistics are kept as what they are: 3-bit codes with fp16 (min, step) pairs (`scale_codes` /
`scale_stats` of the QuantLinear, from which its scales are derived, in the checkpoint and in the bundle),
and the outliers as fp16 values with 16-bit row/column indices, their codes at the zero point
(dequantized 0). What that costs per weight is `layer.storage_bits()` (`edgeasr.metrics.bits`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from edgeasr.errors import QuantizationError
from edgeasr.metrics.bits import SCALE_BITS
from edgeasr.quant.job import QuantJob, to_quant_linear
from edgeasr.quant.layers import dequantize_stat
from edgeasr.quant.methods import register
from edgeasr.quant.methods._hessian import GPTQHooks, gptq_quantize, quantize_column, walk_linears
from edgeasr.quant.methods.gptq import GPTQOptions
from edgeasr.quant.spec import QuantSpec, weight_qparams


@dataclass(frozen=True)
class SpQROptions(GPTQOptions):
    stat_bits: int = 3
    """Bits of the quantized group scales and zero points (16 = keep them fp16)."""
    stat_group: int = 16
    """Output rows whose group scales (and zeros) share one second-level fp16 scale/zero (β2)."""
    outlier_threshold: float = 0.2
    """τ: a weight is an FP outlier when its GPTQ error exceeds τ × the layer's mean var(w)/U_jj²."""
    max_outlier_fraction: float = 0.01
    """Cap on the FP outliers per column, as a fraction of the output rows (the largest errors win)."""
    round_scales_up: bool = False
    """Round quantized group scales up on their grid (no clipping, coarser grids) instead of to nearest."""


def _fp16_toward(x: torch.Tensor, up: bool) -> torch.Tensor:
    """Non-negative fp32 values → the nearest fp16 at or above (`up`) or at or below them."""
    h = x.half()
    off = h.float() < x if up else h.float() > x
    return torch.where(off, (h.view(torch.int16) + (1 if up else -1)).view(torch.float16), h)


def quantize_stat(values: torch.Tensor, bits: int, rows: int, up: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Min/max-quantize a non-negative per-row statistic [out] in chunks of `rows` to `bits`.

    Returns (codes uint8 [out], fp16 (min, step) [chunks, 2]); `dequantize_stat` gives the values. The
    minimum is rounded down and the step up to fp16, so the chunk's range still fits; `up` rounds each
    value up on the grid instead of to nearest.
    """
    out, qmax = values.numel(), (1 << bits) - 1
    pad = -out % rows
    v = torch.nn.functional.pad(values.float(), (0, pad), value=float(values[-1])).reshape(-1, rows)
    lo = _fp16_toward(v.amin(dim=1), up=False)
    step = _fp16_toward((v.amax(dim=1) - lo.float()) / qmax, up=True)
    ratio = (v - lo.float()[:, None]) / step.float().clamp(min=1e-30)[:, None]
    codes = torch.ceil(ratio - 1e-4) if up else torch.round(ratio)
    codes = codes.clamp(0, qmax).flatten()[:out].to(torch.uint8)
    return codes, torch.stack([lo, step], dim=1)


def _stat_values(codes: torch.Tensor, stats: torch.Tensor, rows: int) -> torch.Tensor:
    return dequantize_stat(codes[:, None], stats[:, None, :], rows)[:, 0]


@dataclass
class _GroupStats:
    """What `fit_group` chose for one group: its scales (as returned) and their codes and statistics."""

    scale: torch.Tensor
    scale_codes: torch.Tensor
    scale_stats: torch.Tensor
    zero_codes: torch.Tensor | None
    zero_stats: torch.Tensor | None


class SpQRHooks(GPTQHooks):
    def __init__(self, spec: QuantSpec, options: SpQROptions) -> None:
        super().__init__(spec)
        self.options = options
        self.threshold = math.inf
        self.fitted: list[_GroupStats] = []
        # A zero point is quantized only where its codes + second-level pair cost less than the grid width.
        self.zero_stats = (not spec.symmetric and options.stat_bits < 16
                           and options.stat_bits + 2 * SCALE_BITS / options.stat_group < spec.bits)

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
        scale_codes, scale_stats = quantize_stat(scale, bits, rows, up=self.options.round_scales_up)
        scale = _stat_values(scale_codes, scale_stats, rows)
        zero_codes = zero_stats = None
        if not self.spec.symmetric:
            zero = torch.round(-fitted.amin(dim=1).clamp(max=0) / scale.clamp(min=1e-30)).clamp(0, self.spec.qmax)
            if self.zero_stats:
                zero_codes, zero_stats = quantize_stat(zero, bits, rows)
                zero = _stat_values(zero_codes, zero_stats, rows).round().clamp(0, self.spec.qmax)
        self.fitted.append(_GroupStats(scale, scale_codes, scale_stats, zero_codes, zero_stats))
        return scale, zero

    def statistics(self, scale: torch.Tensor) -> dict:
        """The QuantLinear extras holding the statistics of the final scales [out, groups] (one record per
        group: matched by value, since the loop fits groups in its own order)."""
        if self.options.stat_bits >= 16:
            return {}
        pool = list(self.fitted)
        chosen = []
        for gi in range(scale.shape[1]):
            k = next(i for i, r in enumerate(pool) if torch.equal(r.scale, scale[:, gi]))
            chosen.append(pool.pop(k))
        stack = lambda key: torch.stack([getattr(r, key) for r in chosen], dim=1)
        extras = {"stat_bits": self.options.stat_bits, "stat_group": self.options.stat_group,
                  "scale_codes": stack("scale_codes"), "scale_stats": stack("scale_stats")}
        if self.zero_stats:
            extras.update(zero_codes=stack("zero_codes"), zero_stats=stack("zero_stats"))
        return extras

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


@register("spqr", SpQROptions, calibrated=True,
          summary="small groups with quantized scales + sparse FP outlier weights, on GPTQ (SpQR)")
def spqr(job: QuantJob, options: SpQROptions) -> None:
    job.w_spec.validate_weights()
    if options.clip_grid:
        raise QuantizationError("SpQR fits each group's grid without its outlier weights (which stay in FP) "
                                "instead of clipping it: clip_grid is a GPTQ / QUIK option")

    def quantize(ctx, path, linear, stats):
        spec = job.w_spec_for(ctx.block, path)  # the recipe's grid (per-layer bits of a mixed recipe included)
        hooks = SpQRHooks(spec, options)
        result = gptq_quantize(linear.weight, stats.hessian, spec, damp=options.damp, block_size=options.block_size,
                               act_order=options.act_order, static_groups=options.static_groups, hooks=hooks)
        weight, extras = result.weight, hooks.statistics(result.scale)
        if result.outliers is not None:
            rows, cols = result.outliers.nonzero(as_tuple=True)
            extras.update(sparse_idx=torch.stack([rows, cols]), sparse_val=weight[rows, cols].clone())
            weight = weight.masked_fill(result.outliers, 0.0)  # codes at the zero point: the sparse value adds back
        return to_quant_linear(linear, spec, job.a_spec, weight=weight, scale=result.scale, zero=result.zero, **extras)

    walk_linears(job, quantize, options.true_sequential)
