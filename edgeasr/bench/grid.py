"""A sweep grid read from TOML: models × methods × bit settings × eval sets, expanded into cells.

```toml
models = ["moonshine-tiny", "whisper-tiny.en"]
methods = ["fp", "rtn", "*"]        # "fp" = the unquantized baseline (one cell per model and set);
                                    # "*" = every other registered method, so a re-run picks up new ones
bits = ["w8a16", "w4a16", "w4a8"]   # optionally with a group size: "w4a16g128"
group_size = 64                     # default group size ("w..a..g0" = per channel)
sets = ["asterisk-en"]
limit = 100                         # utterances per set (0 = all)
spread = true                       # take them evenly spaced over the set instead of the first N
seed = 0
order = "model"                     # or "bits": one bit setting across all models before the next
cpus_per_cell = 1
[calibration]                       # CalibrationOptions fields
n_clips = 32
[options.gptq]                      # per-method options
```
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edgeasr.errors import EdgeASRError
from edgeasr.quant.methods import revision_key
from edgeasr.quant.recipe import CalibrationOptions, Recipe

FP_METHOD = "fp"
ALL_METHODS = "*"
_BITS = re.compile(r"^w(\d+)a(\d+)(?:g(\d+))?$")
RECIPE_FIELDS_ADDED_LATER = ("group_size_at",)
"""`Recipe` fields added after sweeps had written rows, which hash into every cell key. Rows keyed before such a
field existed measured their cell with the field empty, so a resumed sweep must not measure them again."""


class GridError(EdgeASRError, ValueError):
    """A sweep grid file that cannot be read or expanded."""


@dataclass(frozen=True)
class Cell:
    """One point of the grid: a recipe (or the FP model) evaluated on one set."""

    recipe: Recipe
    """What is quantized; method "fp" means the model is evaluated as it is."""
    dataset: str
    """Evaluation set name or manifest path."""
    limit: int
    """Utterances evaluated (0 = all)."""
    spread: bool
    """The utterances are evenly spaced over the set rather than its first `limit`."""

    @classmethod
    def from_row(cls, row: dict) -> "Cell":
        """The cell a sweep row measured (rescoring scripts re-decode rows through it)."""
        if row["method"] == FP_METHOD:
            recipe = Recipe(row["model"], FP_METHOD)
        else:
            recipe = Recipe(row["model"], row["method"], row["w_bits"], row["a_bits"], row["group_size"],
                            calibration=CalibrationOptions(**row["calibration"]), options=row["options"])
        return cls(recipe, row["dataset"], row["limit"], row["spread"])

    @property
    def is_fp(self) -> bool:
        return self.recipe.method == FP_METHOD

    @property
    def bits_label(self) -> str:
        return "fp" if self.is_fp else f"w{self.recipe.w_bits}a{self.recipe.a_bits}"

    @property
    def label(self) -> str:
        return f"{self.recipe.label}@{self.dataset}"

    @property
    def key(self) -> str:
        """Identity for resuming: everything that changes the result, hashed."""
        return self._hash(self.recipe.to_dict())

    @property
    def keys(self) -> tuple[str, ...]:
        """`key`, then the key a row written before the recipe fields of `RECIPE_FIELDS_ADDED_LATER` existed carries
        for this cell (when they are at their empty defaults): both name the same measurement."""
        recipe = self.recipe.to_dict()
        if any(recipe[name] for name in RECIPE_FIELDS_ADDED_LATER):
            return (self.key,)
        return self.key, self._hash({k: v for k, v in recipe.items() if k not in RECIPE_FIELDS_ADDED_LATER})

    def _hash(self, recipe: dict) -> str:
        data = {"recipe": recipe, "dataset": self.dataset, "limit": self.limit, "spread": self.spread,
                **revision_key(self.recipe.method)}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Grid:
    """The axes of a sweep and the settings every cell shares."""

    models: tuple[str, ...]
    """Zoo names or model directories."""
    methods: tuple[str, ...]
    """Registered method names, plus "fp" for the baseline."""
    bits: tuple[str, ...]
    """Bit settings as "w{W}a{A}" or "w{W}a{A}g{G}"."""
    sets: tuple[str, ...] = ("asterisk-en",)
    """Evaluation sets."""
    group_size: int = 64
    """Group size when a bit setting names none."""
    limit: int = 0
    """Utterances per set (0 = all)."""
    spread: bool = True
    """Evenly spaced subset instead of the first `limit` utterances."""
    seed: int = 0
    """Seed of calibration sampling (copied into the calibration options)."""
    order: Literal["model", "bits"] = "model"
    """Run order after the FP baselines: all of one model first, or one bit setting across all models."""
    cpus_per_cell: int = 1
    """CPUs each cell's Ray task declares (and the torch threads it uses)."""
    calibration: CalibrationOptions = field(default_factory=CalibrationOptions)
    """Calibration data shared by every calibrated method."""
    options: dict[str, dict] = field(default_factory=dict)
    """Method options by method name."""

    @classmethod
    def from_toml(cls, path: str | Path) -> "Grid":
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise GridError(f"cannot read grid {path}: {exc}") from exc
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise GridError(f"unknown grid keys {sorted(unknown)} in {path}; known: {sorted(known)}")
        for name in ("models", "methods", "bits", "sets"):
            if name in data:
                data[name] = tuple(data[name])
        seed = data.get("seed", 0)
        try:
            data["calibration"] = CalibrationOptions(**{"seed": seed, **data.get("calibration", {})})
        except TypeError as exc:
            raise GridError(f"bad [calibration] table in {path}: {exc}") from exc
        if data.get("order", "model") not in ("model", "bits"):
            raise GridError(f"order must be \"model\" or \"bits\", not {data['order']!r}")
        return cls(**data)

    def cells(self) -> list[Cell]:
        """Every cell: the FP baselines first, then each bit setting across all methods (so a sweep stopped
        early still has whole columns), model by model or, with order = "bits", model within bit setting."""
        methods = self.expanded_methods()
        settings = [self._parse_bits(b) for b in self.bits]
        targets = [(model, dataset) for model in self.models for dataset in self.sets]
        cells = [self._cell(m, FP_METHOD, (16, 16, 0), d) for m, d in targets] if FP_METHOD in methods else []
        quantized = [m for m in methods if m != FP_METHOD]
        if self.order == "bits":
            cells += [self._cell(model, method, setting, dataset) for setting in settings
                      for model, dataset in targets for method in quantized]
        else:
            cells += [self._cell(model, method, setting, dataset) for model, dataset in targets
                      for setting in settings for method in quantized]
        return cells

    def expanded_methods(self) -> list[str]:
        """The methods in grid order, "*" replaced by the registered methods not named explicitly."""
        if ALL_METHODS not in self.methods:
            return list(self.methods)
        from edgeasr.quant.methods import available_methods

        named = [m for m in self.methods if m != ALL_METHODS]
        rest = [m for m in available_methods() if m not in named]
        index = self.methods.index(ALL_METHODS)
        return named[:index] + rest + named[index:]

    def _cell(self, model: str, method: str, setting: tuple[int, int, int], dataset: str) -> Cell:
        w_bits, a_bits, group = setting
        recipe = Recipe(model, method, w_bits, a_bits, group, calibration=self.calibration,
                        options=dict(self.options.get(method, {})))
        return Cell(recipe, dataset, self.limit, self.spread)

    def _parse_bits(self, text: str) -> tuple[int, int, int]:
        match = _BITS.match(text)
        if not match:
            raise GridError(f"bit setting {text!r} is not of the form w4a16 or w4a16g128")
        w_bits, a_bits, group = match.groups()
        return int(w_bits), int(a_bits), self.group_size if group is None else int(group)
