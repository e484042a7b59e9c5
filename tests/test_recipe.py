"""Recipe TOML round trips and validation: no model needed."""

from __future__ import annotations

import pytest

from edgeasr.errors import QuantizationError
from edgeasr.quant.recipe import RECIPE_DIR, CalibrationOptions, Recipe

ODD = Recipe("whisper-tiny.en", "omniquant", 3, 8, 0, symmetric=True, act_symmetric=True, act_dynamic=False,
             parts=("decoder",), calibration=CalibrationOptions("codec2-calib", 8, 2, 32, 7),
             options={"epochs": 2, "lr": 0.005, "let": False, "note": 'a "quoted" word'})


@pytest.mark.parametrize("recipe", [Recipe("moonshine-tiny"), ODD], ids=["defaults", "every-field-changed"])
def test_toml_round_trip(recipe, tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(recipe.to_toml())
    assert Recipe.from_toml(path) == recipe
    assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_label_names_every_choice():
    assert Recipe("moonshine-tiny", "gptq", 4, 16, 64).label == "moonshine-tiny-gptq-w4a16g64"
    assert ODD.label.startswith("whisper-tiny.en-omniquant-w3a8ch-sym-")
    assert Recipe("/models/whisper-tiny.en", "rtn").label.startswith("whisper-tiny.en-rtn-")


def test_every_shipped_recipe_loads_by_name_and_validates():
    names = sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))
    assert len(names) >= 6
    for name in names:
        recipe = Recipe.from_toml(name)            # a shipped recipe is found by its name alone
        recipe.validate()
        assert Recipe.from_toml(f"{name}.toml") == recipe
        assert recipe.label == name, "a shipped recipe's file is named after its label"


def test_unknown_keys_and_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(QuantizationError, match="unknown recipe keys"):
        Recipe.from_dict({"model": "moonshine-tiny", "bitz": 4})
    bad = tmp_path / "bad.toml"
    bad.write_text("model = ")
    with pytest.raises(QuantizationError, match="cannot read recipe"):
        Recipe.from_toml(bad)
    with pytest.raises(QuantizationError, match="cannot read recipe"):
        Recipe.from_toml(tmp_path / "missing.toml")


@pytest.mark.parametrize("changes, message", [
    ({"w_bits": 16}, "not supported"), ({"w_bits": 1}, "weight bits"), ({"a_bits": 5}, "activation bits"),
    ({"group_size": 48}, "power of two"), ({"parts": ("middle",)}, "parts"), ({"parts": ()}, "parts"),
])
def test_validation(changes, message):
    with pytest.raises(QuantizationError, match=message):
        Recipe("moonshine-tiny", **changes).validate()
