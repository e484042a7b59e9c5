"""The byte-budget allocator (no model): never over the budget, monotone in the budget, uses what it can."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from edgeasr.errors import QuantizationError
from edgeasr.metrics.bits import bundle_layer_bytes
from edgeasr.quant.budget import LayerChoice, allocate, bit_costs, byte_costs, layout_of, upgrade_order
from edgeasr.quant.recipe import Recipe

from audio_support import write_pcm16

SHAPES = [(288, 288), (288, 288), (1152, 288), (288, 1152), (416, 416), (1664, 416), (416, 1664), (51864, 384)]


def layers(seed: int = 0) -> list[LayerChoice]:
    """Real layer shapes (moonshine-tiny / whisper widths) with random, decreasing damage per width."""
    rng = random.Random(seed)
    out = []
    for i, (o, k) in enumerate(SHAPES * 3):
        layout = layout_of(o, k, 4, 64, bias=i % 2 == 0)
        base = rng.uniform(0.1, 10.0)
        errors = {2: base * rng.uniform(4, 40), 4: base, 8: base * rng.uniform(0.001, 0.1)}
        out.append(LayerChoice(f"model.layers.{i}.fc", byte_costs(layout), errors))
    return out


def test_costs_come_from_metrics_bits():
    layout = layout_of(1152, 288, 4, 64, bias=True)
    costs = byte_costs(layout)
    assert costs[4] == bundle_layer_bytes(layout)
    assert costs[2] < costs[4] < costs[8]
    even = layout_of(1152, 256, 4, 64)  # 4 whole groups per row: codes + fp16 scale + 4-bit zero per 64
    assert bit_costs(even)[4] / even.weights == pytest.approx(4 + (16 + 4) / 64)


@pytest.mark.parametrize("seed", range(5))
def test_never_over_budget_and_monotone(seed):
    choices = layers(seed)
    low = sum(c.cost_at[2] for c in choices)
    high = sum(c.cost_at[8] for c in choices)
    previous = None
    for budget in range(low, high + 1, (high - low) // 97):
        alloc = allocate(choices, budget)
        assert alloc.cost <= budget
        assert alloc.cost == sum(c.cost_at[alloc.bits[c.path]] for c in choices)
        if previous is not None:
            assert all(alloc.bits[p] >= previous.bits[p] for p in alloc.bits), "more bytes gave a layer fewer bits"
        previous = alloc
    assert set(allocate(choices, high).bits.values()) == {8}
    assert set(allocate(choices, low).bits.values()) == {2}


def test_exact_budget_is_met_exactly():
    choices = layers(1)
    chosen = {c.path: w for c, w in zip(choices, [2, 4, 8] * 8)}
    exact = sum(c.cost_at[chosen[c.path]] for c in choices)
    alloc = allocate(choices, exact)
    assert alloc.cost <= exact
    # the slack left is less than the next upgrade the allocator would have taken
    more = allocate(choices, exact + max(c.cost_at[8] for c in choices))
    assert more.cost > alloc.cost


def test_sensitive_layer_gets_bits_first():
    layout = layout_of(288, 288, 4, 64)
    costs = byte_costs(layout)
    calm = LayerChoice("calm", costs, {2: 1.0, 4: 0.5, 8: 0.1})
    touchy = LayerChoice("touchy", costs, {2: 100.0, 4: 1.0, 8: 0.1})
    alloc = allocate([calm, touchy], costs[2] + costs[4])
    assert alloc.bits == {"calm": 2, "touchy": 4}


def ranked(choices: list[LayerChoice], seed: int) -> list[LayerChoice]:
    """The same layers with a measured order (`joint`): a random interleaving, each layer's 2→4 before its 4→8."""
    rng = random.Random(seed)
    pending = [c.path for c in choices] * 2
    rng.shuffle(pending)
    ranks: dict[str, dict[int, int]] = {}
    for rank, path in enumerate(pending):
        ranks.setdefault(path, {})[4 if 4 not in ranks.get(path, {}) else 8] = rank
    return [replace(c, rank_at=ranks[c.path]) for c in choices]


@pytest.mark.parametrize("seed", range(3))
def test_measured_order_is_taken_as_given_never_over_and_monotone(seed):
    choices = ranked(layers(seed), seed)
    order = upgrade_order(choices)
    assert [(p, b) for p, b, _ in order] == sorted(((c.path, b) for c in choices for b in (4, 8)),
                                                   key=lambda pb: next(c.rank_at[pb[1]] for c in choices
                                                                       if c.path == pb[0]))
    low, high = (sum(c.cost_at[b] for c in choices) for b in (2, 8))
    previous = None
    for budget in range(low, high + 1, (high - low) // 53):
        alloc = allocate(choices, budget)
        assert alloc.cost <= budget
        if previous is not None:
            assert all(alloc.bits[p] >= previous.bits[p] for p in alloc.bits), "more bytes gave a layer fewer bits"
        previous = alloc


def test_measured_order_with_an_upgrade_before_its_predecessor_is_an_error():
    choices = layers(3)
    bad = [replace(c, rank_at={4: 2 * i, 8: 2 * i + 1}) for i, c in enumerate(choices)]
    bad[0] = replace(bad[0], rank_at={4: 10_000, 8: 0})
    with pytest.raises(QuantizationError, match="width order"):
        upgrade_order(bad)


def test_layer_groups_are_sublayers_of_one_block():
    from torch import nn

    from edgeasr.quant.joint import layer_groups

    paths = [("encoder", "model.encoder.layers.0.self_attn.q_proj"), ("encoder", "model.encoder.layers.0.self_attn.v_proj"),
             ("encoder", "model.encoder.layers.0.fc1"), ("encoder", "model.encoder.layers.0.fc2"),
             ("decoder", "model.decoder.layers.1.encoder_attn.k_proj"), ("decoder", "model.decoder.layers.1.mlp.fc1")]
    groups = layer_groups((part, path, nn.Linear(4, 4)) for part, path in paths)
    assert {g.name: [p for p, _ in g.linears] for g in groups} == {
        "model.encoder.layers.0.self_attn": [paths[0][1], paths[1][1]],
        "model.encoder.layers.0.mlp": [paths[2][1], paths[3][1]],  # Whisper's fc1/fc2 sit on the block itself
        "model.decoder.layers.1.encoder_attn": [paths[4][1]],
        "model.decoder.layers.1.mlp": [paths[5][1]]}
    assert [g.part for g in groups] == ["encoder", "encoder", "decoder", "decoder"]


def test_budget_below_lowest_widths_is_an_error():
    choices = layers(2)
    with pytest.raises(QuantizationError, match="nothing fits"):
        allocate(choices, sum(c.cost_at[2] for c in choices) - 1)


def test_recipe_layer_bits_round_trip_toml(tmp_path):
    recipe = Recipe("moonshine-tiny", "gptq", layer_bits={"model.decoder.layers.0.mlp.fc1": 8,
                                                          "model.encoder.layers.1.self_attn.q_proj": 2})
    path = tmp_path / "r.toml"
    path.write_text(recipe.to_toml())
    assert "[layer_bits]" in path.read_text()
    back = Recipe.from_toml(path)
    assert back == recipe
    assert back.w_spec_for("model.decoder.layers.0.mlp.fc1").bits == 8
    assert back.w_spec_for("model.decoder.layers.0.mlp.fc2").bits == 4
    assert back.label != Recipe("moonshine-tiny", "gptq").label
    with pytest.raises(QuantizationError, match="per-layer bits"):
        Recipe("moonshine-tiny", layer_bits={"x": 16}).validate()


def test_calib_dir_reads_any_rate_and_channels(tmp_path, monkeypatch):
    import numpy as np

    from edgeasr.data.manifest import load_manifest
    from edgeasr.errors import AudioError, DatasetError
    from edgeasr.quant.user_audio import folder_manifest

    monkeypatch.setenv("EDGEASR_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "my-voice"
    folder.mkdir()
    t = np.arange(44100 * 2) / 44100
    write_pcm16(folder / "stereo-44k.wav", np.stack([np.sin(440 * t), np.sin(220 * t)], axis=1) * 0.3, 44100)
    write_pcm16(folder / "mono-8k.wav", np.sin(np.arange(8000 * 3) / 8000 * 300) * 0.3, 8000)
    (folder / "notes.txt").write_text("not audio, not read")
    utterances = load_manifest(folder_manifest(folder))
    assert sorted(round(u.seconds) for u in utterances) == [2, 3]
    assert all(u.text is None for u in utterances)
    (folder / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(AudioError, match="broken.wav"):
        folder_manifest(folder)
    with pytest.raises(DatasetError, match="no recordings"):
        folder_manifest(tmp_path / "cache")


def test_group_size_at_gives_a_width_its_own_grid_everywhere(tmp_path):
    recipe = Recipe("some-model", "rtn", 4, layer_bits={"a": 2, "b": 8}, group_size_at={2: 32})
    assert (recipe.w_spec_for("a").bits, recipe.w_spec_for("a").group_size) == (2, 32)
    assert (recipe.w_spec_for("b").bits, recipe.w_spec_for("b").group_size) == (8, 64)
    assert recipe.label.endswith("-w2g32")
    assert recipe.label != Recipe("some-model", "rtn", 4, layer_bits=recipe.layer_bits).label
    path = tmp_path / "recipe.toml"
    path.write_text(recipe.to_toml())
    assert Recipe.from_toml(path) == recipe
    layout = layout_of(1152, 288, 4, 64)
    finer = byte_costs(layout, group_at={2: 32})
    assert finer[2] > byte_costs(layout)[2] and finer[4] == byte_costs(layout)[4]
    with pytest.raises(QuantizationError, match="power of two"):
        Recipe("some-model", "rtn", 4, group_size_at={2: 24}).validate()


def test_group_at_argument_is_parsed_once_for_every_cli():
    import argparse

    from edgeasr.quant.recipe import parse_group_at

    assert parse_group_at("2=32") == (2, 32)
    for bad in ("2", "2=x", "=32", "2:32"):
        with pytest.raises(argparse.ArgumentTypeError, match="BITS=GROUP"):
            parse_group_at(bad)


def test_method_options_are_read_as_toml_values_and_name_their_series() -> None:
    import argparse

    from edgeasr.bench.budget import method_label, row_method
    from edgeasr.quant.recipe import parse_option

    assert parse_option("clip_grid=100") == ("clip_grid", 100)
    assert parse_option("max_shrink=0.8") == ("max_shrink", 0.8)
    assert parse_option("act_order=false") == ("act_order", False)
    assert parse_option("mode=smart") == ("mode", "smart")  # not TOML: kept as text
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
        parse_option("clip_grid")
    assert method_label("gptq", {}) == "gptq"
    assert method_label("gptq", {"max_shrink": 0.8, "clip_grid": 100}) == "gptq clip_grid=100 max_shrink=0.8"
    assert row_method({"method": "awq", "calibration": {"n_clips": 16}}) == "awq"  # rows written before options
    assert (row_method({"method": "quarot", "options": {"weight_method": "gptq"}, "calibration": {"n_clips": 64}})
            == "quarot weight_method=gptq calib=64")  # a calibration size of its own is a series of its own


def test_a_head_grid_of_its_own_is_a_series_of_its_own() -> None:
    """Bundles whose head is stored in other groups than the default 64 never join the default series."""
    from edgeasr.bench.budget import series_of

    assert series_of(("m", "gptq", "uniform W4", None)) == "gptq uniform"
    assert series_of(("m", "quarot", "uniform W2 g32 head g32", None)) == "quarot uniform head g32"
    assert series_of(("m", "gptq", "mixed 3.00 bits (W2 g32) head g32", "hessian")) == "gptq mixed (hessian) (W2 g32) head g32"


def test_the_front_keeps_only_bundles_no_smaller_one_beats() -> None:
    from edgeasr.bench.plots import pareto_front

    points = [(20.0, 50.0), (19.0, 90.0), (21.0, 60.0), (22.0, 10.0), (21.5, 10.0), (23.0, 10.0)]
    assert pareto_front(points) == [(19.0, 90.0), (20.0, 50.0), (21.5, 10.0)]
    assert pareto_front([]) == []


def test_layer_maps_place_each_linear_of_either_family_in_its_block_and_sublayer() -> None:
    import math

    from edgeasr.bench.layer_map import layer_grid

    whisper = {"model.encoder.layers.0.self_attn.out_proj": 4, "model.encoder.layers.1.fc2": 2,
               "model.decoder.layers.0.encoder_attn.k_proj": 2, "model.decoder.layers.0.fc1": 8}
    grids = layer_grid(whisper)
    columns, grid = grids["encoder"]
    assert columns == ["self o", "fc2"] and grid.shape == (2, 2)
    assert grid[0, 0] == 4 and grid[1, 1] == 2 and math.isnan(grid[0, 1]) and math.isnan(grid[1, 0])
    assert grids["decoder"][0] == ["cross k", "fc1"] and list(grids["decoder"][1][0]) == [2, 8]
    moonshine = layer_grid({"model.decoder.layers.2.self_attn.o_proj": 4, "model.decoder.layers.2.mlp.fc1": 2})
    assert moonshine["decoder"][0] == ["self o", "fc1"] and moonshine["decoder"][1].shape == (3, 2)
    with pytest.raises(ValueError, match="not a block linear"):
        layer_grid({"proj_out": 4})
