"""HQQ: Half-Quadratic Quantization (Badri & Shaji, 2023), calibration-free.

For every group of weights HQQ looks for the grid (zero point, optionally also the scale) that
minimises a sparsity-promoting lp-norm (p < 1) of the quantization error ||W - Q⁻¹(Q(W))||_p^p, which is
robust to the few large outlier errors that dominate a min/max grid. The non-convex problem is split with
an auxiliary error variable W_e (half-quadratic splitting) and solved by alternating:

  1. W_e ← shrink_p(W - dequant(codes), β)      generalised soft-thresholding (prox of the lp-norm)
  2. codes ← round(W / s + z);  z ← mean(codes - (W - W_e) / s)                          (closed form)
  3. β ← κ·β                                       the quadratic coupling tightens every iteration

No activations are needed. As in the paper, the scale stays min/max's and the zero point is a real number
(`float_zero`), stored in fp16 beside the scale: MatMulNBits reads float zero points. Rounded onto the grid,
as integer zero points must be, the fit can hardly move and HQQ is RTN; `optimize_scale` then also refits the
scale (least squares in step 2, the zero point rounded), which clips each group's largest weights and breaks
Whisper at W3 (docs/study-heldout.md, grids 14b-16).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgeasr.errors import QuantizationError
from edgeasr.quant.job import QuantJob, replace_module, to_quant_linear
from edgeasr.quant.methods import register
from edgeasr.quant.spec import (QuantSpec, dequantize_groups, group_mask, quantize_groups, to_groups,
                                weight_qparams)


@dataclass(frozen=True)
class HQQOptions:
    """Half-quadratic solver settings (the paper's defaults)."""

    iterations: int = 20
    """Alternating-minimisation steps per layer."""
    lp_norm: float = 0.7
    """p of the lp error norm being minimised (p < 1 promotes sparse, outlier-robust errors)."""
    beta: float = 10.0
    """Initial weight β of the quadratic coupling between the error variable and the real error."""
    kappa: float = 1.01
    """Factor β is multiplied by after every iteration (the β schedule)."""
    optimize_scale: bool = False
    """Also refit the scale in closed form (True: our earlier default, with integer zero points; its lp fit clips
    each group's largest weights and breaks Whisper at W3). False: the zero point alone moves, as in the paper.
    A symmetric grid has no zero point to move: its scale is refitted either way."""
    early_stop: bool = True
    """Stop a layer as soon as its mean absolute error stops decreasing (as the reference implementation)."""
    keep_range: bool = False
    """With `optimize_scale`: never let the refit scale clip a group (its grid, at the chosen integer zero point, keeps
    spanning the group's min and max). The lp-norm (p < 1) rewards grids that round most weights finely and cut a
    few large ones off, which Whisper cannot afford at 3 bits (docs/study-heldout.md). Held to the span, HQQ is
    RTN in all but name on these weights (against min/max at W3, first block of moonshine-tiny / whisper-tiny.en:
    lp error −0.4 / −0.2 %, L2 +0.8 / +0.5 %), so it stays an experiment, not the default."""
    float_zero: bool = True
    """Keep each group's zero point as a real number (stored in fp16, as the scale) instead of an integer on the
    grid: the original HQQ, whose zero-point-only fit moves the grid by fractions of a step (with integer zero
    points it can hardly move off min/max's, and is RTN). MatMulNBits takes float zero points at 2, 4 and 8 bits;
    they cost 16 bits per group instead of `bits` (+0.2 bits per weight in groups of 64)."""


def _covering_scale(lo: torch.Tensor, hi: torch.Tensor, zero: torch.Tensor, qmax: int) -> torch.Tensor:
    """The smallest scale whose grid at integer zero point `zero` spans [lo, hi] (lo ≤ 0 ≤ hi), so the group's
    extreme weights sit on or inside its end levels; inf where none does (a zero point on the grid's edge with
    weights beyond it)."""
    inf = torch.full_like(lo, float("inf"))
    above = torch.where(zero < qmax, hi / (qmax - zero).clamp(min=1), torch.where(hi > 0, inf, torch.zeros_like(hi)))
    below = torch.where(zero > 0, -lo / zero.clamp(min=1), torch.where(lo < 0, inf, torch.zeros_like(lo)))
    return torch.maximum(above, below)


def _refit_scale(q, zero, target, valid, fallback):
    """Closed-form scale for fixed codes and zero point: argmin_s ||target - (q - z)·s||²."""
    qz = (q - zero[..., None]) * valid
    denom = (qz * qz).sum(-1)
    s_fit = (qz * target).sum(-1) / denom.clamp(min=1e-12)
    return torch.where((denom > 0) & (s_fit > 1e-8), s_fit, fallback)


@torch.no_grad()
def hqq_qparams(w: torch.Tensor, spec: QuantSpec, options: HQQOptions = HQQOptions()) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(row, group) scale and zero point (real-valued with `float_zero`) minimising the lp-norm of the weight error.

    Returns tensors shaped like `weight_qparams`' ([out, n_groups]), usable with `quantize_weight`.
    """
    if options.lp_norm <= 0:
        raise QuantizationError(f"hqq lp_norm must be > 0 (0.7 in the paper), got {options.lp_norm}")
    w = w.float()
    wg = to_groups(w, spec)                                  # [out, groups, g], zero-padded short last group
    valid = group_mask(w.shape[1], spec)                     # [groups, g]: 0 on padding columns
    scale, zero = weight_qparams(w, spec)
    rounding = torch.round
    if options.float_zero and not spec.symmetric:
        # Start from the grid that spans each group exactly (-min/scale, unrounded): the extreme weights sit on it.
        # Fitted from there, the first blocks of whisper-tiny.en / moonshine-tiny at W3 lose lp −4.6 / −4.6 % and
        # L2 −7.8 / −8.0 % against min/max; from min/max's rounded zero point only −3.5 / −3.0 % and −7.0 / −6.5 %.
        rounding = lambda z: z  # noqa: E731
        zero = -wg.amin(-1).clamp(max=0) / scale
    scale, zero = scale.clone(), zero.clone()
    minmax_scale, minmax_zero = scale.clone(), zero.clone()
    lo, hi = wg.amin(-1).clamp(max=0), wg.amax(-1).clamp(min=0)  # the span min/max's grid covers (padding is 0)
    fixed_zero = spec.symmetric
    qmax = spec.qmax

    best_cost = torch.full_like(scale, float("inf"))
    best_scale, best_zero = scale.clone(), zero.clone()
    beta = options.beta
    prev_err = float("inf")
    n = valid.sum(-1)                                        # [groups]: real columns per group
    for step in range(options.iterations + 1):
        q = quantize_groups(wg, scale, zero, spec)
        err = wg - dequantize_groups(q, scale, zero) * valid
        magnitude = err.abs() + 1e-8
        weight = magnitude.pow(options.lp_norm - 1)          # |e|^(p-1): shared by the lp cost and the shrinkage
        cost = (magnitude * weight).sum(-1)                  # Σ|e|^p: score the current grid, keep each group's best
        better = cost < best_cost
        best_cost = torch.where(better, cost, best_cost)
        best_scale = torch.where(better, scale, best_scale)
        best_zero = torch.where(better, zero, best_zero)
        mean_err = float(err.abs().mean())
        if step == options.iterations or (options.early_stop and mean_err >= prev_err):
            break
        prev_err = mean_err
        # prox of the lp-norm (generalised soft-thresholding) → the error HQQ tolerates; the rest is the target
        w_e = torch.sign(err) * torch.relu(err.abs() - weight / beta)
        target = wg - w_e * valid                            # what the grid should reproduce
        if fixed_zero:                                       # symmetric grid: zero point is fixed, fit the scale
            scale = _refit_scale(q, zero, target, valid, scale)
        elif options.optimize_scale:
            # least squares target ≈ q·s - o per group, then integer zero point z = o/s and refit s for it
            q_mean = (q * valid).sum(-1) / n
            t_mean = target.sum(-1) / n
            qc = (q - q_mean[..., None]) * valid
            var = (qc * qc).sum(-1)
            s_new = (qc * (target - t_mean[..., None])).sum(-1) / var.clamp(min=1e-12)
            s_new = torch.where((var > 0) & (s_new > 1e-8), s_new, scale)
            zero = rounding(q_mean - t_mean / s_new).clamp(0, qmax)
            scale = _refit_scale(q, zero, target, valid, s_new)
        else:                                                # original HQQ: closed-form zero point
            z = ((q - target / scale[..., None]) * valid).sum(-1) / n
            zero = rounding(z).clamp(0, qmax)
        if options.optimize_scale and options.keep_range:
            cover = _covering_scale(lo, hi, zero, qmax)
            spans = torch.isfinite(cover)  # where no scale spans the group at this zero point, min/max's grid does
            scale = torch.where(spans, torch.maximum(scale, cover), minmax_scale)
            zero = torch.where(spans, zero, minmax_zero)
        beta *= options.kappa
    return best_scale, best_zero


@register("hqq", HQQOptions, calibrated=False,
          summary="half-quadratic lp-norm (p<1) fit of each group's real-valued zero point, no calibration data")
def hqq(job: QuantJob, options: HQQOptions) -> None:
    if not job.w_spec.enabled:
        raise QuantizationError("hqq quantizes weights: use w_bits 2-8 (activations may additionally be quantized)")
    if job.a_spec.enabled and not job.a_spec.dynamic:
        raise QuantizationError("hqq is calibration-free: it supports weight-only or dynamic (per-token) activation "
                                "quantization, not static activation scales")
    for _part, block, graph in job.blocks():
        for path in graph.linears:
            linear = block.get_submodule(path)
            scale, zero = hqq_qparams(linear.weight.detach(), job.w_spec, options)
            replace_module(block, path, to_quant_linear(linear, job.w_spec, job.a_spec, scale=scale, zero=zero,
                                                        float_zero=options.float_zero and not job.w_spec.symmetric))
