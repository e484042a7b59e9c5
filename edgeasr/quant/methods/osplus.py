"""Outlier Suppression+ (Wei et al., 2023): channel-wise shifting and scaling of activations.

Outlier channels are asymmetric (a channel lives far from zero) and concentrated (a few channels are much
wider than the rest). Per scale site (the linears reading one tensor):
  1. shift: δ_j = (max X_j + min X_j) / 2 centres every channel; δ goes into the previous LayerNorm's
     bias (or v_proj's bias before o_proj), else stays on the layer as in_shift, and the linears' biases
     absorb W·δ (redone with the rounded weights once they are quantized);
  2. scale: s_j = max(1, r_j / t) with r_j the shifted channel's half range, so channels wider than the
     threshold t are squeezed into it (their weight columns grow by s_j); t is chosen on a grid to
     minimise the output error of the site's linears with weights and activations both quantized, and s
     is folded into the previous op like the shift.
The paper quantizes activations per tensor, where centring always narrows the range. With per-token grids
(edgeasr's default) a shift can widen a token's range, and on held-out speech it bought nothing: against the
per-site search (`shift = "search"`, shift only where it lowers the site's output error, revision 1's default)
scaling alone tied on 27 of 28 W4A8 / W8A8 cells (4 models, 5 sets; paired bootstrap) and was better on one,
while the search was the only calibrated W4A8 cell worse than RTN (whisper-tiny.en in 10 dB noise, every
calibration draw) and ended a moonshine-tiny clip early in two draws of three, though it lowered the site errors
on that noisy speech as on the calibration (docs/study-heldout.md). So revision 2 scales only by default
(`shift = "never"`); "search" and "always" (the paper) stay options.
Requires activation quantization.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgeasr.errors import QuantizationError
from edgeasr.quant.calibrate import BlockContext
from edgeasr.quant.job import QuantJob
from edgeasr.quant.methods import register
from edgeasr.quant.methods._folding import SiteScorer, apply_scale, apply_shift, quantize_block_linears, scale_sites
from edgeasr.quant.methods._stats import InputStats, collect_input_stats

SHIFT_MODES = ("never", "search", "always")


@dataclass(frozen=True)
class OSPlusOptions:
    """Shifting and scaling search of Outlier Suppression+."""

    shift: str = "never"
    """Channel-wise shift δ = (max + min) / 2: "never" (scaling only), "always" (the paper), or "search" (per
    site, keep it only where it lowers the quantized output error; revision 1's default)."""
    n_grid: int = 20
    """Candidate thresholds t: quantiles of the channels' ranges from the widest channel (no scaling) down to
    the narrowest one."""
    scale_layers: bool = True
    """Also shift/scale linears no previous op can absorb into (fc2 behind GELU, cross-attention K/V),
    keeping the shift and scale on the layer as in_shift / in_scale."""
    max_tokens: int = 2048
    """Calibration rows sampled per site to score each candidate."""


def threshold_grid(half_range: torch.Tensor, n_grid: int) -> torch.Tensor:
    """Thresholds t at the channel-range quantiles 1, …, 0: the first leaves every channel alone."""
    levels = torch.linspace(1.0, 0.0, max(n_grid, 2))
    return torch.quantile(half_range.double(), levels.double()).float()


def search_site(score: SiteScorer, st: InputStats, shifts: tuple[bool, ...], n_grid: int
                ) -> dict[bool, tuple[torch.Tensor, torch.Tensor | None, float]]:
    """For each shift setting asked for, the (scale, shift, error) of the threshold with the lowest output error."""
    best = {}
    for shifted in shifts:
        delta = (st.max + st.min) / 2 if shifted else None
        half_range = ((st.max - st.min) / 2 if shifted else st.absmax).clamp(min=1e-6)
        for t in threshold_grid(half_range, n_grid):
            s = (half_range / t).clamp(min=1.0)
            err = score(s, delta)
            if shifted not in best or err < best[shifted][2]:
                best[shifted] = (s, delta, err)
    return best


@register("osplus", OSPlusOptions, calibrated=True, needs_activation_quant=True,
          summary="Outlier Suppression+: searched channel scaling folded into the previous op (channel shift: an option)")
def osplus(job: QuantJob, options: OSPlusOptions) -> None:
    if options.shift not in SHIFT_MODES:
        raise QuantizationError(f"osplus shift must be one of {', '.join(SHIFT_MODES)}; got {options.shift!r}")
    w_spec, a_spec = job.w_spec, job.a_spec
    shifts = {"always": (True,), "never": (False,), "search": (False, True)}[options.shift]

    @torch.inference_mode()
    def process(ctx: BlockContext) -> None:
        sites = scale_sites(ctx.graph, keep_on_layer=options.scale_layers)
        stats = collect_input_stats(ctx, [s.input_path for s in sites], max_rows=options.max_tokens,
                                    seed=job.recipe.calibration.seed)
        for site in sites:
            found = search_site(SiteScorer(ctx.block, site, stats[site.input_path], w_spec, a_spec),
                                stats[site.input_path], shifts, options.n_grid)
            s, delta, _ = min(found.values(), key=lambda best: best[2])
            if delta is not None:
                apply_shift(ctx.block, site, delta)
            apply_scale(ctx.block, site, s)
        quantize_block_linears(ctx.block, ctx.graph, w_spec, a_spec)

    job.walk(process)
