"""SmoothQuant (Xiao et al., 2023): migrate activation outliers into the weights.

Activation outliers sit in a few fixed channels, which ruins per-token activation grids, while weights are
smooth. Per scale site, s_j = max|X_j|^α / max|W_j|^(1−α) (max over the site's linears for W), X divided
by s (folded into the previous LayerNorm / linear / gated value half, or kept on the layer as in_scale),
W multiplied by s; then weights are rounded to their grid and activations quantized as the recipe says.
Meant for W8A8-style settings; it requires activation quantization.

The paper sets one α per model. One α for every site of a W4 model migrates too much into the weights
where 4-bit groups cannot take it: moonshine-base W4A8 at α = 0.5 gave v_proj twice RTN's output error
and lost a whole 18 s clip to an empty transcript. So by default α is chosen per site on a grid, by the
output error of the site's linears with weights and activations quantized (the automatic α of later
SmoothQuant implementations); `alpha_grid = 0` keeps the paper's single α.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgeasr.quant.calibrate import BlockContext
from edgeasr.quant.job import QuantJob
from edgeasr.quant.methods import register
from edgeasr.quant.methods._folding import SiteScorer, apply_scale, quantize_block_linears, scale_sites
from edgeasr.quant.methods._stats import collect_input_stats


@dataclass(frozen=True)
class SmoothQuantOptions:
    """Migration strength of SmoothQuant."""

    alpha: float = 0.5
    """Migration strength where it is not searched (`alpha_grid = 0`): 0 leaves activations alone, 1 moves
    all of their range into the weights."""
    alpha_grid: int = 10
    """Per site, α is searched over i / alpha_grid (i = 0 … alpha_grid) by the quantized output error on
    the calibration tokens; 0 uses `alpha` at every site (the paper)."""
    max_tokens: int = 2048
    """Calibration rows sampled per site to score each α."""
    scale_layers: bool = False
    """Also smooth linears no previous op can absorb into (fc2 behind GELU, cross-attention K/V), keeping
    the scale on the layer as in_scale. Off as in the paper: an unsearched scale from a channel's
    calibration max blows up held-out activations of channels that were quiet in calibration (Whisper's
    decoder fc2 sees only tens of calibration tokens)."""


def smooth_scale(act_absmax: torch.Tensor, weight_absmax: torch.Tensor, alpha: float) -> torch.Tensor:
    """s_j = max|X_j|^α / max|W_j|^(1−α), kept away from zero."""
    s = act_absmax.clamp(min=1e-5).pow(alpha) / weight_absmax.clamp(min=1e-5).pow(1 - alpha)
    return s.clamp(min=1e-5)


def alpha_candidates(options: SmoothQuantOptions) -> list[float]:
    """The α values a site chooses from: the grid, or the one fixed α."""
    if options.alpha_grid <= 0:
        return [options.alpha]
    return [i / options.alpha_grid for i in range(options.alpha_grid + 1)]


@register("smoothquant", SmoothQuantOptions, calibrated=True, needs_activation_quant=True,
          summary="per-channel smoothing s = max|X|^α / max|W|^(1-α), α searched per site, folded into the previous op")
def smoothquant(job: QuantJob, options: SmoothQuantOptions) -> None:
    @torch.inference_mode()
    def process(ctx: BlockContext) -> None:
        sites = scale_sites(ctx.graph, keep_on_layer=options.scale_layers)
        stats = collect_input_stats(ctx, [s.input_path for s in sites],
                                    max_rows=options.max_tokens if options.alpha_grid else 0,
                                    seed=job.recipe.calibration.seed)
        for site in sites:
            st = stats[site.input_path]
            w_absmax = torch.stack([ctx.linear(t).weight.detach().float().abs().amax(0) for t in site.targets]).amax(0)
            scales = [smooth_scale(st.absmax, w_absmax, alpha) for alpha in alpha_candidates(options)]
            if len(scales) > 1:
                scales.sort(key=SiteScorer(ctx.block, site, st, job.w_spec, job.a_spec))
            apply_scale(ctx.block, site, scales[0])
        quantize_block_linears(ctx.block, ctx.graph, job.w_spec, job.a_spec)

    job.walk(process)
