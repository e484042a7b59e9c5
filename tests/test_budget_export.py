"""A byte-budget mixed-precision recipe end to end on moonshine-tiny (RTN): label-free sensitivity on a few
unlabelled clips, allocation under a bundle budget, checkpoint, bundle. The bundle's total stays within the
budget, every layer's codes, scales and zero points read back bit-exact from a MatMulNBits of its own width
(and its own group size: the 2-bit layers use smaller groups),
the checkpoint reloads at the same per-layer bits, and the card shows the map."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeasr.export import export_bundle
from edgeasr.metrics.bits import storage_bits
from edgeasr.quant.api import quantize
from edgeasr.quant.budget import MB
from edgeasr.quant.checkpoint import load_checkpoint, save_checkpoint
from edgeasr.quant.mixed import BudgetOptions, plan
from edgeasr.quant.recipe import CalibrationOptions, Recipe
from edgeasr.runtime.bundle import read_bundle
from edgeasr.zoo import resolve_model_dir
from export_support import GraphIndex, assert_bundle_holds_codes, quant_layers

MODEL = "moonshine-tiny"
BUDGET_MB = 16.0
"""Between moonshine-tiny's uniform W2 (~13.6 MB) and W4 (~18.0 MB) bundles with the default export options."""
UNLABELLED = CalibrationOptions("calib-mix", n_clips=2, max_decoder_tokens=32)
"""Two clips; sensitivity drops their transcripts and decodes its own decoder inputs (myQASR's statistic keeps
the test short; the KL estimator has its own test, tests/test_sensitivity.py)."""


@pytest.mark.slow
def test_mixed_budget_bundle_round_trip(tmp_path: Path):
    # 2-bit layers in groups of 32, the rest in the recipe's 64: each layer's own grid must survive the trip
    recipe = Recipe(MODEL, "rtn", 4, calibration=UNLABELLED, group_size_at={2: 32})
    mixed, allocation, scores, fixed = plan(recipe, BudgetOptions(budget_mb=BUDGET_MB, estimator="myqasr"))
    assert allocation.cost + fixed <= BUDGET_MB * MB
    assert len(set(mixed.layer_bits.values())) >= 2, allocation.histogram
    assert set(mixed.layer_bits) == {s.path for s in scores}

    backend, stats, location = quantize(mixed)
    layers = quant_layers(backend.model)
    assert {n: l.w_spec.bits for n, l in layers.items()} == mixed.layer_bits
    assert {n: l.w_spec.group_size for n, l in layers.items()} == {
        n: 32 if b == 2 else 64 for n, b in mixed.layer_bits.items()}
    checkpoint = save_checkpoint(backend.model, mixed, Path(resolve_model_dir(MODEL)[0]), tmp_path / "ckpt", stats)
    reloaded, _, recipe_back = load_checkpoint(checkpoint, expected=mixed)
    assert recipe_back == mixed
    bundle = export_bundle(tmp_path / "bundle", checkpoint)
    assert_bundle_holds_codes(reloaded, bundle)

    data = read_bundle(bundle).data
    assert data["sizes"]["total_bytes_without_meta"] <= BUDGET_MB * MB
    graphs = {g: GraphIndex(bundle / f) for g, f in data["graphs"].items()}
    for name, record in data["weights"]["layers"].items():
        assert record["bits"] == mixed.layer_bits[name]
        assert graphs[record["graph"]].kernel_bits(record["node"]) == storage_bits(mixed.layer_bits[name]), name
    card = (bundle / "README.md").read_text()
    assert "Bits per layer" in card and "Wmixed" in card and "(2-bit layers: group 32)" in card


@pytest.mark.slow
def test_a_head_in_groups_of_32_is_counted_and_the_bundle_still_fits(tmp_path: Path):
    """`--head-group-size 32` on a byte budget: the plan counts the finer head (exactly the extra bytes of its
    scales and zero points), spends that much less on the linears, and the bundle exported so stays in budget."""
    from edgeasr.export import ExportOptions
    from edgeasr.metrics.bits import bundle_layer_bytes, head_layout

    recipe = Recipe(MODEL, "rtn", 4, calibration=UNLABELLED, group_size_at={2: 32})
    _, coarse, scores, fixed_coarse = plan(recipe, BudgetOptions(budget_mb=BUDGET_MB, estimator="myqasr"))
    mixed, fine, _, fixed_fine = plan(recipe, BudgetOptions(budget_mb=BUDGET_MB, estimator="myqasr", head_group_size=32),
                                      scores)
    backend, stats, location = quantize(mixed)
    vocab, width = backend.model.get_input_embeddings().weight.shape
    head = lambda block: bundle_layer_bytes(head_layout(vocab, width, 4, block))  # noqa: E731
    assert fixed_fine - fixed_coarse == head(32) - head(64) > 0
    assert fine.cost + fixed_fine <= BUDGET_MB * MB and fine.cost <= coarse.cost
    checkpoint = save_checkpoint(backend.model, mixed, Path(location), tmp_path / "ckpt", stats)
    bundle = export_bundle(tmp_path / "bundle", checkpoint, options=ExportOptions(head_group_size=32))
    data = read_bundle(bundle).data
    assert data["weights"]["head_block_size"] == 32
    assert data["sizes"]["total_bytes_without_meta"] <= BUDGET_MB * MB
