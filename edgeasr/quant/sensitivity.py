"""Label-free sensitivity of each linear to low bits, from unlabelled calibration audio.

Every estimator runs the FP model on the calibration clips with any labels dropped (the decoder reads the FP
model's own greedy transcripts) and scores every linear of the recipe's parts at each candidate width:

* `kl`: the KL divergence KL(P_FP || P_q) of the decoder's next-token distribution, averaged over the
  tokens of the clips (teacher-forced on the FP model's greedy tokens), when that one linear alone is
  round-to-nearest quantized on the recipe's grid at b bits and everything else stays FP. It measures the
  damage where it matters, in the output, and sees what local scores miss: an encoder layer's error passing
  through every later block, a decoder layer's error reaching every token.
* `myqasr` (Fish et al. 2023, the default): the median over input channels of the layer's mean |x| in FP. myQASR ranks
  layers by this statistic alone; to weigh it against bytes, a layer's damage at b bits is taken as
  median · weights · 4^-b (rounding noise power falls 4× per added bit), so the greedy order is the median
  ranking. (myQASR takes the median over all activation values; the median over channels of the per-channel
  mean |x| is what the shared collector keeps without storing every activation.)
* `joint` (`quant.joint`): not a per-layer score but an upgrade order, found by a greedy search that lowers
  one sublayer group at a time and measures the same KL with every earlier choice applied, so the damage of
  layers quantized together is measured, not summed.
* `hessian` (HAWQ-style, diagonal): Σ_j E[x_j²] · Σ_i (Q_b(W) − W)_ij², the layer's rounding error weighted by
  the diagonal of its input second moment (the diagonal of GPTQ's Hessian).
* `method` (`quant.method_swap`): the same KL, but with each linear taken from the model the recipe's method
  quantized uniformly at b bits, so a method's compensation decides which layers suffer, not rounding's.

The scores depend on the FP weights, the grid (group size, symmetry), the widths and the calibration set, not
on the base method (all but `method` score the round-to-nearest grid), so one scoring serves RTN, GPTQ and AWQ
recipes of every budget. They are cached on disk under that key, with the model's weights hash (`MANIFEST.json` of the
zoo folder): a sweep scores each model once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from edgeasr.errors import QuantizationError
from edgeasr.metrics.bits import GridLayout
from edgeasr.paths import cache_dir
from edgeasr.quant.arch import graph_for
from edgeasr.quant.budget import ESTIMATORS, PACKED_BITS, layout_of
from edgeasr.quant.calibrate import BlockContext, CalibrationClip, load_calibration_clips
from edgeasr.quant.job import QuantJob
from edgeasr.quant.joint import joint_scores
from edgeasr.quant.method_swap import method_scores
from edgeasr.quant.methods import revision_key
from edgeasr.quant.methods._stats import collect_input_stats
from edgeasr.quant.recipe import Recipe
from edgeasr.quant.spec import fake_quant_weight
from edgeasr.quant.teacher_kl import TeacherForcedKL

log = logging.getLogger(__name__)

SCORE_VERSION = 1
"""Bumped when an estimator's definition changes, so stale cached scores are not reused."""

Scores = dict[str, tuple]
"""Layer path → (damage at each width, the estimator's per-layer statistic[, rank of each upgrade: `joint`])."""


@dataclass(frozen=True)
class LayerScore:
    """One linear's stored grid and its estimated damage at each candidate width."""

    path: str
    layout: GridLayout
    """The layer's grid at the recipe's `w_bits` (the allocator changes only the bits)."""
    error_at: dict[int, float]
    statistic: float
    """The estimator's per-layer number (KL at the lowest width, median |x|, or Σ E[x²]), for reports."""
    rank_at: dict[int, int] | None = None
    """Position of the upgrade to each width in the allocator's order, when the estimator measured the order
    itself (`joint`) instead of scoring layers one by one."""


def weights_sha(location: str | Path) -> str | None:
    """The hash that names a zoo model's weights (its `MANIFEST.json`), None for a folder without one."""
    from edgeasr.atomic import MANIFEST

    manifest = Path(str(location)) / MANIFEST
    return hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else None


def _linears(model: nn.Module, parts: tuple[str, ...]) -> Iterator[tuple[str, str, nn.Linear]]:
    """(part, recipe path, module) of every block linear, in execution order."""
    arch = graph_for(model)
    for part in parts:
        prefix = arch.encoder_blocks if part == "encoder" else arch.decoder_blocks
        for i, block in enumerate(arch.blocks(model, part)):
            for path in arch.block_graph(part).linears:
                yield part, f"{prefix}.{i}.{path}", block.get_submodule(path)


def _walk_scores(backend, recipe: Recipe, clips: list[CalibrationClip], widths: tuple[int, ...],
                 estimator: str) -> Scores:
    """`myqasr` / `hessian`: one walk over the blocks with the shared statistics collector."""
    job = QuantJob(backend, recipe)
    job._clips = clips
    scores: Scores = {}

    @torch.inference_mode()
    def process(ctx: BlockContext) -> None:
        stats = collect_input_stats(ctx, ctx.graph.linears, gram=estimator == "hessian", transformed=False)
        for path in ctx.graph.linears:
            w, st = ctx.linear(path).weight.detach().float(), stats[path]
            if estimator == "myqasr":
                statistic = float(st.mean_abs.median())
                errors = {b: statistic * w.numel() * 4.0 ** -b for b in widths}
            else:
                second_moment = st.gram.diagonal() / max(st.n, 1)
                statistic = float(second_moment.sum())
                errors = {b: float(((fake_quant_weight(w, recipe.spec_at(b)) - w) ** 2
                                    * second_moment[None, :]).sum()) for b in widths}
            scores[f"{ctx.name}.{path}"] = (errors, statistic)

    job.walk(process, desc=f"sensitivity ({estimator})")
    return scores


@torch.inference_mode()
def _kl_scores(backend, recipe: Recipe, clips: list[CalibrationClip], widths: tuple[int, ...]) -> Scores:
    """`kl`: quantize one linear at a time, teacher-force the FP tokens, average KL(FP || quantized) per token."""
    kl = TeacherForcedKL(backend, clips, recipe.calibration.max_decoder_tokens)
    scores: Scores = {}
    layers = list(_linears(backend.model, recipe.parts))
    for part, path, linear in tqdm(layers, desc="sensitivity (kl)", unit="layer"):
        original = linear.weight.data.clone()
        errors = {}
        for b in widths:
            linear.weight.data.copy_(fake_quant_weight(original, recipe.spec_at(b)))
            errors[b] = kl(kl.encode() if part == "encoder" else None)  # decoder layers reuse the FP encoder
        linear.weight.data.copy_(original)
        scores[path] = (errors, errors[min(widths)])
    log.info("kl: %d linears × %d widths on %d clips, %d tokens", len(layers), len(widths), len(clips), kl.tokens)
    return scores


def _cache_file(recipe: Recipe, estimator: str, widths: tuple[int, ...], source_sha: str) -> Path:
    key = {"version": SCORE_VERSION, "weights": source_sha, "estimator": estimator, "widths": list(widths),
           "group_size": recipe.group_size, "symmetric": recipe.symmetric, "parts": list(recipe.parts),
           "calibration": dataclasses.asdict(recipe.calibration)}
    if estimator == "method":  # the method's own quantization is what is scored
        key.update(method=recipe.method, options=recipe.options, **revision_key(recipe.method))
    if recipe.group_size_at:  # absent otherwise, so caches of recipes without it keep their key
        key["group_size_at"] = {str(b): g for b, g in sorted(recipe.group_size_at.items())}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir("sensitivity") / f"{recipe.model.replace('/', '_')}-{estimator}-{digest}.json"


def _read_cache(path: Path) -> Scores | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return {p: tuple({int(b): v for b, v in per_width.items()} if isinstance(per_width, dict) else per_width
                     for per_width in entry) for p, entry in data.items()}


def _write_cache(path: Path, scores: Scores) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(scores, indent=0))
    tmp.replace(path)  # atomic: a concurrent reader sees the old file or the whole new one


def score_layers(backend, recipe: Recipe, estimator: str = ESTIMATORS[0], widths: tuple[int, ...] = PACKED_BITS,
                 source_sha: str | None = None) -> list[LayerScore]:
    """Score every linear of `recipe.parts` of the (FP, unchanged) model in `backend`; with `source_sha` (the
    weights hash, `weights_sha`) the scores are read from / written to the sensitivity cache."""
    if estimator not in ESTIMATORS:
        raise QuantizationError(f"unknown sensitivity estimator {estimator!r}; choose from {ESTIMATORS}")
    cache = _cache_file(recipe, estimator, widths, source_sha) if source_sha else None
    scores = _read_cache(cache) if cache else None
    if scores is not None:
        log.info("sensitivity (%s): cached scores %s", estimator, cache.name)
    else:
        # label-free even on a labelled set: transcripts are dropped, the decoder reads the FP model's own output
        clips = [dataclasses.replace(c, text=None) for c in load_calibration_clips(recipe.calibration)]
        if estimator == "kl":
            scores = _kl_scores(backend, recipe, clips, widths)
        elif estimator == "joint":
            scores = joint_scores(backend, recipe, clips, widths, _linears(backend.model, recipe.parts))
        elif estimator == "method":
            scores = method_scores(backend, recipe, clips, widths, _linears(backend.model, recipe.parts))
        else:
            scores = _walk_scores(backend, recipe, clips, widths, estimator)
        if cache:
            _write_cache(cache, scores)
    out = []
    for _, path, linear in _linears(backend.model, recipe.parts):
        w = linear.weight
        layout = layout_of(w.shape[0], w.shape[1], recipe.w_bits, recipe.group_size, recipe.symmetric,
                           linear.bias is not None)
        errors, statistic, *ranks = scores[path]
        out.append(LayerScore(path, layout, errors, statistic, ranks[0] if ranks else None))
    return out
