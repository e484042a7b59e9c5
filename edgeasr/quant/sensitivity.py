"""Label-free sensitivity of each linear to low bits, from unlabelled calibration audio.

Both estimators run the FP model block by block over the calibration clips (decoder inputs are always the FP
model's own transcripts: any labels of the set are dropped) and score every linear of the recipe's parts at each
candidate width:

* `median` (myQASR, Fish et al. 2023): the median over input channels of the layer's mean |x| in FP.
  myQASR ranks layers by this statistic alone; to weigh it against bytes, a layer's damage at b bits is
  taken as median · weights · 4^-b (rounding noise power falls 4× per added bit), so the greedy order is
  the median ranking. (myQASR takes the median over all activation values; the median over channels of
  the per-channel mean |x| is what the shared collector keeps without storing every activation.)
* `hessian` (HAWQ-style, diagonal): Σ_j E[x_j²] · Σ_i (Q_b(W) − W)_ij² — the layer's rounding error at
  b bits (the recipe's grid, round to nearest) weighted by the diagonal of its input second moment, i.e.
  the diagonal of GPTQ's Hessian. It sees both what the weights lose and how much the inputs amplify it.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch

from edgeasr.errors import QuantizationError
from edgeasr.metrics.bits import GridLayout
from edgeasr.quant.budget import PACKED_BITS, layout_of
from edgeasr.quant.calibrate import BlockContext, load_calibration_clips
from edgeasr.quant.job import QuantJob
from edgeasr.quant.methods._stats import collect_input_stats
from edgeasr.quant.recipe import Recipe
from edgeasr.quant.spec import fake_quant_weight

log = logging.getLogger(__name__)

ESTIMATORS = ("median", "hessian")


@dataclass(frozen=True)
class LayerScore:
    """One linear's stored grid and its estimated damage at each candidate width."""

    path: str
    layout: GridLayout
    """The layer's grid at the recipe's `w_bits` (the allocator changes only the bits)."""
    error_at: dict[int, float]
    statistic: float
    """The estimator's per-layer number (median |x|, or Σ E[x²] for `hessian`), for reports."""


def score_layers(backend, recipe: Recipe, estimator: str = "median",
                 widths: tuple[int, ...] = PACKED_BITS) -> list[LayerScore]:
    """Score every linear of `recipe.parts` of the (FP, unchanged) model in `backend`."""
    if estimator not in ESTIMATORS:
        raise QuantizationError(f"unknown sensitivity estimator {estimator!r}; choose from {ESTIMATORS}")
    job = QuantJob(backend, recipe)
    # label-free even on a labelled set: transcripts are dropped, the decoder runs on the FP model's own output
    job._clips = [dataclasses.replace(c, text=None) for c in load_calibration_clips(recipe.calibration)]
    scores: list[LayerScore] = []

    @torch.inference_mode()
    def process(ctx: BlockContext) -> None:
        stats = collect_input_stats(ctx, ctx.graph.linears, gram=estimator == "hessian", transformed=False)
        for path in ctx.graph.linears:
            linear, st = ctx.linear(path), stats[path]
            w = linear.weight.detach().float()
            layout = layout_of(w.shape[0], w.shape[1], recipe.w_bits, recipe.group_size, recipe.symmetric,
                               linear.bias is not None)
            if estimator == "median":
                statistic = float(st.mean_abs.median())
                errors = {b: statistic * w.numel() * 4.0 ** -b for b in widths}
            else:
                second_moment = st.gram.diagonal() / max(st.n, 1)
                statistic = float(second_moment.sum())
                errors = {b: float(((fake_quant_weight(w, recipe.w_spec.with_bits(b)) - w) ** 2
                                    * second_moment[None, :]).sum()) for b in widths}
            scores.append(LayerScore(f"{ctx.name}.{path}", layout, errors, statistic))

    job.walk(process, desc=f"sensitivity ({estimator})")
    log.info("scored %d linears with %s on %s", len(scores), estimator, job.calibration_stats())
    return scores
