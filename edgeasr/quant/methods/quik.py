"""QUIK (Ashkboos et al., 2023): keep the few input channels that carry outlier activations in FP and
quantize everything else, weights (with GPTQ) and activations.

Per linear, the `n` input channels with the largest calibration |x| are outliers: their weight columns
stay in FP (`QuantLinear.outlier_weight`, computed densely on FP activations) and the remaining channels
go through GPTQ, with the outlier columns placed last in the GPTQ order so they absorb the rounding
error of all the others. Activations (a_bits < 16) are quantized on the non-outlier channels only, so
the outliers no longer stretch the per-token grid. The MLP down-projection (fc2), whose inputs come out
of GELU/SiLU with the heaviest outliers, gets more outlier channels, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgeasr.quant.job import QuantJob, to_quant_linear
from edgeasr.quant.methods import register
from edgeasr.quant.methods._hessian import GPTQHooks, gptq_quantize, walk_linears
from edgeasr.quant.methods.gptq import GPTQOptions


@dataclass(frozen=True)
class QUIKOptions(GPTQOptions):
    n_outliers: int = 32
    """FP input channels per linear (0 = none outside fc2); capped at 1/8 of the layer's width."""
    fc2_outliers: int = 64
    """FP input channels of each block's MLP down-projection (fc2); capped at 1/8 of its width."""


def outlier_channels(absmax: torch.Tensor, n: int) -> torch.Tensor:
    """Indices (sorted) of the `n` channels with the largest calibration |x|, n capped at width / 8."""
    n = min(n, absmax.numel() // 8)
    if n <= 0:
        return torch.zeros(0, dtype=torch.long)
    return torch.topk(absmax, n).indices.sort().values


@register("quik", QUIKOptions, calibrated=True,
          summary="FP outlier input channels + GPTQ on the rest, weights and activations (QUIK)")
def quik(job: QuantJob, options: QUIKOptions) -> None:
    def quantize(ctx, path, linear, stats):
        n = options.fc2_outliers if path == ctx.graph.linears[-1] else options.n_outliers
        idx = outlier_channels(stats.absmax, n)
        result = gptq_quantize(linear.weight, stats.hessian, job.w_spec, damp=options.damp,
                               block_size=options.block_size, act_order=options.act_order,
                               static_groups=options.static_groups, keep_fp=idx,
                               hooks=GPTQHooks(job.w_spec, options.clip_grid, options.max_shrink))
        weight = result.weight.clone()
        if not idx.numel():
            return to_quant_linear(linear, job.w_spec, job.a_spec, weight=weight, scale=result.scale,
                                   zero=result.zero)
        outlier_weight = weight[:, idx].clone()  # FP columns, updated by GPTQ's error compensation
        weight[:, idx] = 0.0  # their codes sit at the zero point: the quantized matmul ignores them
        return to_quant_linear(linear, job.w_spec, job.a_spec, weight=weight, scale=result.scale, zero=result.zero,
                               outlier_idx=idx, outlier_weight=outlier_weight)

    walk_linears(job, quantize, options.true_sequential)
