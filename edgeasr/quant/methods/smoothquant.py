"""SmoothQuant (Xiao et al., 2023): migrate activation outliers into the weights.

Activation outliers sit in a few fixed channels, which ruins per-token activation grids, while weights are
smooth. Per scale site, s_j = max|X_j|^α / max|W_j|^(1−α) (max over the site's linears for W), X divided
by s (folded into the previous LayerNorm / linear / gated value half, or kept on the layer as in_scale),
W multiplied by s; then weights are rounded to their grid and activations quantized as the recipe says.
Meant for W8A8-style settings; it requires activation quantization.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgeasr.quant.calibrate import BlockContext
from edgeasr.quant.job import QuantJob
from edgeasr.quant.methods import register
from edgeasr.quant.methods._folding import apply_scale, quantize_block_linears, scale_sites
from edgeasr.quant.methods._stats import collect_input_stats


@dataclass(frozen=True)
class SmoothQuantOptions:
    """Migration strength of SmoothQuant."""

    alpha: float = 0.5
    """Migration strength: 0 leaves activations alone, 1 moves all of their range into the weights."""
    scale_layers: bool = False
    """Also smooth linears no previous op can absorb into (fc2 behind GELU, cross-attention K/V), keeping
    the scale on the layer as in_scale. Off as in the paper: an unsearched scale from a channel's
    calibration max blows up held-out activations of channels that were quiet in calibration (Whisper's
    decoder fc2 sees only tens of calibration tokens)."""


def smooth_scale(act_absmax: torch.Tensor, weight_absmax: torch.Tensor, alpha: float) -> torch.Tensor:
    """s_j = max|X_j|^α / max|W_j|^(1−α), kept away from zero."""
    s = act_absmax.clamp(min=1e-5).pow(alpha) / weight_absmax.clamp(min=1e-5).pow(1 - alpha)
    return s.clamp(min=1e-5)


@register("smoothquant", SmoothQuantOptions, calibrated=True, needs_activation_quant=True,
          summary="per-channel smoothing s = max|X|^α / max|W|^(1-α) folded into the previous op (W8A8)")
def smoothquant(job: QuantJob, options: SmoothQuantOptions) -> None:
    @torch.inference_mode()
    def process(ctx: BlockContext) -> None:
        sites = scale_sites(ctx.graph, keep_on_layer=options.scale_layers)
        stats = collect_input_stats(ctx, [s.input_path for s in sites])
        for site in sites:
            w_absmax = torch.stack([ctx.linear(t).weight.detach().float().abs().amax(0) for t in site.targets]).amax(0)
            apply_scale(ctx.block, site, smooth_scale(stats[site.input_path].absmax, w_absmax, options.alpha))
        quantize_block_linears(ctx.block, ctx.graph, job.w_spec, job.a_spec)

    job.walk(process)
