"""AWQ: activation-aware weight quantization (Lin et al., 2023).

Salient weight channels are those that see large activations. Scaling input channel j of a linear up by
s_j (and its input down by s_j, folded into the previous op) shrinks that channel's relative rounding
error. Per scale site (the linears reading one tensor), s = mean|x|^α with α picked on a grid to minimise
the output error of the quantized linears against FP on the block's calibration inputs; then each layer's
grid is clipped: per (row, group) the max-value shrink ratio that minimises that group's output error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgeasr.quant.calibrate import BlockContext
from edgeasr.quant.job import QuantJob
from edgeasr.quant.methods import register
from edgeasr.quant.methods._folding import (SiteScorer, apply_scale, fake_quant_weight_or_fp, quantize_block_linears,
                                            scale_sites)
from edgeasr.quant.methods._stats import collect_input_stats
from edgeasr.quant.spec import QuantSpec


@dataclass(frozen=True)
class AWQOptions:
    """Scale search and clipping search of AWQ."""

    n_grid: int = 20
    """Points of the α grid (α = i / n_grid, i = 0 … n_grid − 1; α = 0 is plain RTN)."""
    clip: bool = True
    """Search a max-value shrink ratio per output row and group after scaling."""
    clip_grid: int = 20
    """Shrink ratios are 1 − i / clip_grid for i below max_shrink · clip_grid."""
    max_shrink: float = 0.5
    """Largest fraction of the max value the clipping search may cut away."""
    clip_skip: tuple[str, ...] = ("q_proj", "k_proj")
    """Layers left unclipped (as in the reference AWQ): the error of q/k outputs says little about the
    attention pattern they produce."""
    scale_layers: bool = True
    """Also scale linears no previous op can absorb into (fc2 behind GELU, cross-attention K/V), keeping
    the scale on the layer as in_scale."""
    damp: float = 0.01
    """Added to the input Gram matrix's diagonal, as a fraction of its mean: with few calibration tokens
    (a decoder sees tens per clip) the Gram is rank-deficient and the searches would fit the few directions
    seen; damping also charges weight error in the unseen ones (as GPTQ's dampening does)."""
    max_tokens: int = 2048
    """Calibration rows sampled per site to score candidates when activations are quantized too."""


def awq_scale(mean_abs: torch.Tensor, alpha: float) -> torch.Tensor:
    """AWQ's per-channel scale mean|x|^α, normalised so that max·min = 1."""
    s = mean_abs.clamp(min=1e-4).pow(alpha).clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


def search_clip(weight: torch.Tensor, gram: torch.Tensor, spec: QuantSpec, clip_grid: int,
                max_shrink: float) -> torch.Tensor:
    """Per (row, group) shrink ratio minimising that group's output error dᵀ·H_g·d (H_g = the group's block
    of the input Gram matrix, so every calibration token counts)."""
    out_f, in_f = weight.shape
    g = spec.group_width(in_f)
    n_groups = spec.n_groups(in_f)
    pad = n_groups * g - in_f
    gram = torch.nn.functional.pad(gram, (0, pad, 0, pad))
    blocks = torch.stack([gram[i * g:(i + 1) * g, i * g:(i + 1) * g] for i in range(n_groups)])  # [G, g, g]
    best_err = torch.full((out_f, n_groups), float("inf"))
    best = torch.ones(out_f, n_groups)
    for i in range(max(1, int(max_shrink * clip_grid))):
        ratio = 1 - i / clip_grid
        d = fake_quant_weight_or_fp(weight, spec, ratio) - weight
        d = torch.nn.functional.pad(d, (0, pad)).reshape(out_f, n_groups, g).transpose(0, 1)  # [G, out, g]
        err = (torch.bmm(d, blocks) * d).sum(-1).T  # [out, G]
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, torch.full_like(best, ratio), best)
    return best


@register("awq", AWQOptions, calibrated=True,
          summary="activation-aware per-channel scales (grid over α) folded into the previous op, plus clipping search")
def awq(job: QuantJob, options: AWQOptions) -> None:
    w_spec, a_spec = job.w_spec, job.a_spec

    @torch.inference_mode()
    def process(ctx: BlockContext) -> None:
        sites = scale_sites(ctx.graph, keep_on_layer=options.scale_layers)
        inputs = [s.input_path for s in sites]
        inputs += [p for p in ctx.graph.linears if not any(p in s.targets for s in sites)]
        stats = collect_input_stats(ctx, inputs, gram=True, max_rows=options.max_tokens if a_spec.enabled else 0,
                                    seed=job.recipe.calibration.seed)
        for st in stats.values():
            st.gram += options.damp * st.gram.diagonal().mean() * torch.eye(st.gram.shape[0])
        specs = {p: job.w_spec_for(ctx.block, p) for p in ctx.graph.linears}
        input_of = {p: p for p in inputs} | {t: s.input_path for s in sites for t in s.targets}
        scales: dict[str, torch.Tensor] = {}
        for site in sites:
            st = stats[site.input_path]
            score = SiteScorer(ctx.block, site, st, w_spec, a_spec)
            best, best_err = None, float("inf")
            for i in range(options.n_grid):
                s = awq_scale(st.mean_abs, i / options.n_grid)
                err = score(s)
                if err < best_err:
                    best, best_err = s, err
            apply_scale(ctx.block, site, best)
            scales[site.input_path] = best
        clips = {}
        if options.clip and w_spec.enabled and w_spec.granularity != "tensor":
            for path in ctx.graph.linears:
                if path.rsplit(".", 1)[-1] in options.clip_skip:
                    continue
                key = input_of[path]
                gram = stats[key].gram
                if key in scales:  # the input the layer now sees is x / s
                    gram = gram / scales[key][:, None] / scales[key][None, :]
                weight = ctx.linear(path).weight.detach().float()
                clips[path] = search_clip(weight, gram, specs[path], options.clip_grid, options.max_shrink)
        quantize_block_linears(ctx.block, ctx.graph, w_spec, a_spec, clips, specs)

    job.walk(process)
