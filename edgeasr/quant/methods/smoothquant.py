"""SmoothQuant (Xiao et al., 2023): migrate activation outliers into the weights.

Activation outliers sit in a few fixed channels, which ruins per-token activation grids, while weights are
smooth. Per scale site, s_j = max|X_j|^α / max|W_j|^(1−α) (max over the site's linears for W), X divided
by s (folded into the previous LayerNorm / linear / gated value half, or kept on the layer as in_scale),
W multiplied by s; then weights are rounded to their grid and activations quantized as the recipe says.
Meant for W8A8-style settings; it requires activation quantization.

The paper sets one α per model (0.5 here). `alpha_grid > 0` instead picks α per site on a grid, by the output
error of the site's linears with weights and activations quantized (the automatic α of later implementations).
Measured at W4A8 with calib-mix (docs/study-heldout.md, session 16), the search is no better in general: it
helps the base models (moonshine-base tts-en 15.70 → 14.43) and is worse than the one α on the tiny models'
long-form items (whisper-tiny.en 6.91 → 8.10, significantly worse than RTN), so the paper's α stays the default.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from edgeasr.quant.calibrate import BlockContext
from edgeasr.quant.job import QuantJob
from edgeasr.quant.methods import register
from edgeasr.quant.methods._folding import SiteScorer, apply_scale, quantize_block_linears, scale_sites
from edgeasr.quant.methods._stats import collect_input_stats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmoothQuantOptions:
    """Migration strength of SmoothQuant."""

    alpha: float = 0.5
    """Migration strength where it is not searched (`alpha_grid = 0`): 0 leaves activations alone, 1 moves
    all of their range into the weights."""
    alpha_grid: int = 0
    """0 uses `alpha` at every site (the paper); above 0, α is searched per site over i / alpha_grid
    (i = 0 … alpha_grid) by the quantized output error on the calibration tokens."""
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
          summary="per-channel smoothing s = max|X|^α / max|W|^(1-α) folded into the previous op (W8A8)")
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
            candidates = [(alpha, smooth_scale(st.absmax, w_absmax, alpha)) for alpha in alpha_candidates(options)]
            if len(candidates) > 1:
                score = SiteScorer(ctx.block, site, st, job.w_spec, job.a_spec)
                candidates.sort(key=lambda candidate: score(candidate[1]))
            alpha, scale = candidates[0]
            log.debug("smoothquant %s: α = %.2f", ", ".join(site.targets), alpha)
            apply_scale(ctx.block, site, scale)
        quantize_block_linears(ctx.block, ctx.graph, job.w_spec, job.a_spec)

    job.walk(process)
