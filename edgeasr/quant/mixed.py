"""A mixed-precision recipe from a budget: score the layers, allocate bits, write them into the recipe."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from edgeasr.errors import QuantizationError
from edgeasr.metrics.bits import DEFAULT_HEAD_BLOCK, layer_bits
from edgeasr.quant.budget import MB, Allocation, LayerChoice, allocate, at_width, bit_costs, byte_costs
from edgeasr.quant.recipe import Recipe
from edgeasr.quant.sensitivity import LayerScore, score_layers, weights_sha

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BudgetOptions:
    """What the bits must fit: a bundle size or an average of effective bits per weight (one of them)."""

    budget_mb: float | None = None
    """Total bundle bytes in MB (10^6 bytes): every file but the card and bundle.json."""
    avg_bits: float | None = None
    """Effective bits per weight over the quantized linears (`metrics.bits`: codes, scales, zero points)."""
    estimator: str = "myqasr"
    """Sensitivity estimator (`quant.sensitivity.ESTIMATORS`). myQASR's statistic stays the default: the output
    KL was not clearly better at the one budget measured on both (docs/budgets.md) and costs minutes, not seconds."""
    head_group_size: int = DEFAULT_HEAD_BLOCK
    """Columns per scale of the bundle's 4-bit head, as it will be exported (`edgeasr export --head-group-size`):
    a byte budget counts the head at this grid."""


def fixed_bundle_bytes(backend, recipe: Recipe, source_dir: Path | None, quantized: set[str],
                       head_block: int = DEFAULT_HEAD_BLOCK) -> int:
    """Bytes of a bundle of this model that the allocation does not choose: the head, front end, position
    tables and FP32 rest as `metrics.cost.bundle_parts` counts them, plus the tokenizer file. The ONNX graph
    structure (protobuf nodes, a few hundred kB on the tiny models) is not known before export and is not
    counted: the exported total runs above the allocation's by that much."""
    from edgeasr.backends.layers import describe_layers
    from edgeasr.metrics.cost import bundle_parts

    layers = [dataclasses.replace(l, quant_bits=1) if l.name in quantized else l for l in describe_layers(backend.model)]
    parts = bundle_parts(layers, head_block=head_block)
    tokenizer = source_dir / "tokenizer.json" if source_dir else None
    return sum(n for part, n in parts.items() if part != "quantized_linears") + (
        tokenizer.stat().st_size if tokenizer and tokenizer.exists() else 0)


def with_method_vectors(scores: list[LayerScore], recipe: Recipe) -> list[LayerScore]:
    """The scores with each layout carrying the input vectors the recipe's method adds to every linear (QuaRot's
    signs), so that what the allocation spends is what the checkpoint and the bundle hold."""
    from edgeasr.quant.methods import get_method

    info = get_method(recipe.method)
    vectors = info.input_vectors(info.make_options(recipe.options))
    return [dataclasses.replace(s, layout=dataclasses.replace(s.layout, n_channel_vectors=vectors)) for s in scores]


def plan(recipe: Recipe, options: BudgetOptions,
         scores: list[LayerScore] | None = None) -> tuple[Recipe, Allocation, list[LayerScore], int]:
    """The recipe with `layer_bits` chosen under the budget, the allocation, the scores (pass them back in to
    plan other budgets of the same model and grid without scoring again) and the fixed bytes (0 for an
    `avg_bits` target)."""
    from edgeasr.backends.hf import HFBackend
    from edgeasr.zoo import resolve_model_dir

    if (options.budget_mb is None) == (options.avg_bits is None):
        raise QuantizationError("give exactly one of --budget-mb and --avg-bits")
    recipe.validate()
    location, _ = resolve_model_dir(recipe.model)
    backend = HFBackend.from_pretrained(location, recipe.model)
    if scores is None:
        scores = score_layers(backend, dataclasses.replace(recipe, layer_bits={}), options.estimator,
                              source_sha=weights_sha(location))
    scores = with_method_vectors(scores, recipe)
    if options.budget_mb is not None:
        source = Path(location) if Path(str(location)).is_dir() else None
        fixed = fixed_bundle_bytes(backend, recipe, source, {s.path for s in scores}, options.head_group_size)
        budget = int(options.budget_mb * MB) - fixed
        if budget <= 0:
            raise QuantizationError(f"{options.budget_mb} MB is below the bundle's fixed part ({fixed / MB:.2f} MB: "
                                    "head, front end, norms, tokenizer) before any linear is stored")
        choices = [LayerChoice(s.path, byte_costs(s.layout, group_at=recipe.group_size_at), s.error_at, s.rank_at)
                   for s in scores]
    else:
        fixed = 0
        budget = int(options.avg_bits * sum(s.layout.weights for s in scores))
        choices = [LayerChoice(s.path, bit_costs(s.layout, group_at=recipe.group_size_at), s.error_at, s.rank_at)
                   for s in scores]
    allocation = allocate(choices, budget)
    effective = (sum(layer_bits(at_width(s.layout, allocation.bits[s.path], recipe.group_size_at)).total for s in scores)
                 / sum(s.layout.weights for s in scores))
    log.info("allocation: %s layers per width, %.3f effective bits per weight%s", allocation.histogram, effective,
             f", linears {allocation.cost / MB:.3f} MB + fixed {fixed / MB:.3f} MB" if options.budget_mb else "")
    return dataclasses.replace(recipe, layer_bits=dict(allocation.bits)), allocation, scores, fixed
