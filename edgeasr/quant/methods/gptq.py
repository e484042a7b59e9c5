"""GPTQ (Frantar et al., 2022): quantize each linear column by column, compensating every column's
rounding error on the columns not yet quantized through the inverse Hessian of the layer's inputs.

Blocks are walked in order on the outputs of the already-quantized previous blocks; with
`true_sequential` the linears inside a block are quantized stage by stage (q/k/v, then o, then fc1,
fc2), each stage calibrated on the inputs the quantized earlier stages produce. The loop itself lives in `_hessian.py` (shared with QUIK
and SpQR).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeasr.quant.job import QuantJob, to_quant_linear
from edgeasr.quant.methods import register
from edgeasr.quant.methods._hessian import GPTQHooks, gptq_quantize, walk_linears


@dataclass(frozen=True)
class GPTQOptions:
    damp: float = 0.01
    """Dampening added to the Hessian diagonal, as a fraction of its mean."""
    block_size: int = 128
    """Columns per lazy batch update (affects speed only)."""
    act_order: bool = True
    """Quantize columns in order of decreasing Hessian diagonal (permutation undone at the end)."""
    static_groups: bool = False
    """Fit every group's grid from the original weights up front instead of from the compensated ones."""
    true_sequential: bool = False
    """Calibrate each stage of a block (q/k/v, o, fc1, fc2) on the outputs of its already-quantized
    earlier stages: one more block pass per stage; no measurable gain on moonshine-tiny W3."""
    clip_grid: int = 0
    """0: each group's grid spans its min/max. N: search N shrink ratios per (row, group) for the grid
    with the least Hessian-weighted rounding error (as the reference GPTQ's `mse` quantizer does)."""
    max_shrink: float = 0.5
    """Largest fraction of a group's range the clipping search may cut away."""


@register("gptq", GPTQOptions, calibrated=True, summary="Hessian-based error compensation column by column (GPTQ)")
def gptq(job: QuantJob, options: GPTQOptions) -> None:
    def quantize(ctx, path, linear, stats):
        w_spec = job.w_spec_for(ctx.block, path)
        result = gptq_quantize(linear.weight, stats.hessian, w_spec, damp=options.damp,
                               block_size=options.block_size, act_order=options.act_order,
                               static_groups=options.static_groups,
                               hooks=GPTQHooks(w_spec, options.clip_grid, options.max_shrink))
        return to_quant_linear(linear, w_spec, job.a_spec, weight=result.weight, scale=result.scale,
                               zero=result.zero)

    walk_linears(job, quantize, options.true_sequential)
