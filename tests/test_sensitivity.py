"""The KL sensitivity on moonshine-tiny's decoder (2 unlabelled clips): one layer quantized at a time changes
the FP model's token distribution more at fewer bits, and the scores are stored under the weights hash so a
second planning reads them instead of running the model again."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from edgeasr.backends.hf import HFBackend
from edgeasr.paths import cache_dir
from edgeasr.quant.recipe import CalibrationOptions, Recipe
from edgeasr.quant.sensitivity import score_layers, weights_sha
from edgeasr.zoo import resolve_model_dir

MODEL = "moonshine-tiny"
DECODER_ONLY = Recipe(MODEL, "rtn", 4, parts=("decoder",),
                      calibration=CalibrationOptions("calib-mix", n_clips=2, max_decoder_tokens=24))
"""The decoder alone keeps it short: its layers reuse the FP encoder output."""


@pytest.mark.slow
def test_kl_falls_with_bits_and_is_cached(tmp_path):
    before = set(cache_dir("sensitivity").iterdir())
    try:
        _check_kl(tmp_path)
    finally:  # the cache entries of this test's own key go
        for path in set(cache_dir("sensitivity").iterdir()) - before:
            path.unlink()


def _check_kl(tmp_path) -> None:
    location, _ = resolve_model_dir(MODEL)
    backend = HFBackend.from_pretrained(location, MODEL)
    sha = weights_sha(location)
    assert sha is not None
    # a fresh key (this test's own seed), so the first call really scores
    recipe = dataclasses.replace(DECODER_ONLY, calibration=dataclasses.replace(DECODER_ONLY.calibration,
                                                                               seed=hash(tmp_path) % 10**6))
    scores = score_layers(backend, recipe, "kl", source_sha=sha)
    assert len(scores) == 60  # 6 decoder blocks × (4 self-attention + 4 cross-attention + fc1 + fc2)
    assert all(s.path.startswith("model.decoder.layers.") for s in scores)
    for s in scores:
        assert s.error_at[2] >= s.error_at[8] >= 0.0, s
    totals = {b: sum(s.error_at[b] for s in scores) for b in (2, 4, 8)}
    assert totals[2] > totals[4] > totals[8] > 0.0, totals
    # the most sensitive layer at 2 bits moves the distribution by far more than the calmest one
    at2 = sorted(s.error_at[2] for s in scores)
    assert at2[-1] > 10 * at2[0]

    # cached by weights hash: changing the model in memory does not change what the same key returns
    with torch.no_grad():
        backend.model.model.decoder.layers[0].mlp.fc1.weight.zero_()
    again = score_layers(backend, recipe, "kl", source_sha=sha)
    assert [(s.path, s.error_at) for s in again] == [(s.path, s.error_at) for s in scores]
    # without a hash there is no cache: the zeroed layer is scored as it now is
    # (a zero matrix quantizes to itself, so that layer no longer changes anything)
    fresh = {s.path: s.error_at for s in score_layers(backend, recipe, "kl")}
    assert fresh["model.decoder.layers.0.mlp.fc1"] == {2: 0.0, 4: 0.0, 8: 0.0}


@pytest.mark.slow
def test_joint_order_is_measured_with_earlier_choices_applied():
    """`joint` lowers one sublayer group at a time with every earlier choice applied: each layer's upgrades come
    in width order, the KL it records grows as more is lowered, and the cache gives the same order back."""
    from edgeasr.quant.budget import LayerChoice, allocate, byte_costs, upgrade_order

    location, _ = resolve_model_dir(MODEL)
    backend = HFBackend.from_pretrained(location, MODEL)
    before = set(cache_dir("sensitivity").iterdir())
    try:
        scores = score_layers(backend, DECODER_ONLY, "joint", source_sha=weights_sha(location))
        cached = score_layers(backend, DECODER_ONLY, "joint", source_sha=weights_sha(location))
    finally:
        for path in set(cache_dir("sensitivity").iterdir()) - before:
            path.unlink()
    assert [(s.path, s.rank_at) for s in cached] == [(s.path, s.rank_at) for s in scores]
    assert sorted(r for s in scores for r in s.rank_at.values()) == list(range(2 * len(scores)))
    for s in scores:  # the all-8 state is the least damaged one every path saw
        assert s.error_at[2] > s.error_at[8] >= 0.0, s
    choices = [LayerChoice(s.path, byte_costs(s.layout), s.error_at, s.rank_at) for s in scores]
    order = upgrade_order(choices)
    first = order[0][0]
    # the first upgrade of the measured order is what the smallest budget above all-2 takes
    low = sum(c.cost_at[2] for c in choices)
    assert allocate(choices, low + order[0][2]).bits[first] == 4


@pytest.mark.slow
def test_method_scores_the_layers_the_method_made():
    """`method` takes each linear from the method's own uniform models: with GPTQ (which compensates its rounding on
    these very clips) the decoder's damage at 2 bits is far below rounding's, it falls with bits, the widest width
    is the widest model alone for every layer, and a GPTQ scoring is never served to an RTN recipe."""
    location, _ = resolve_model_dir(MODEL)
    backend = HFBackend.from_pretrained(location, MODEL)
    gptq = dataclasses.replace(DECODER_ONLY, method="gptq")
    before = set(cache_dir("sensitivity").iterdir())
    try:
        by_method = score_layers(backend, gptq, "method", source_sha=weights_sha(location))
        by_rtn = score_layers(backend, dataclasses.replace(gptq, method="rtn"), "method", source_sha=weights_sha(location))
    finally:
        for path in set(cache_dir("sensitivity").iterdir()) - before:
            path.unlink()
    rounding = score_layers(backend, DECODER_ONLY, "kl")
    assert len(by_method) == len(rounding) == 60
    assert len({s.error_at[8] for s in by_method}) == 1  # the 8-bit GPTQ model, no layer swapped
    totals = {b: sum(s.error_at[b] for s in by_method) for b in (2, 4, 8)}
    assert totals[2] > totals[4] > totals[8] > 0.0, totals
    gptq_at2, rtn_at2 = totals[2], sum(s.error_at[2] for s in by_rtn)
    assert gptq_at2 < 0.5 * rtn_at2, (gptq_at2, rtn_at2)
    # RTN's uniform models hold round-to-nearest layers: its `method` scores track the rounding KL (measured from FP)
    kl_at2 = sum(s.error_at[2] for s in rounding)
    assert 0.5 * kl_at2 < rtn_at2 < 2 * kl_at2, (rtn_at2, kl_at2)
