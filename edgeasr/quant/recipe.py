"""Recipe: everything that defines one quantized model, read from and written to TOML."""

from __future__ import annotations

import argparse
import hashlib
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from edgeasr.errors import QuantizationError
from edgeasr.paths import package_data

RECIPE_DIR = package_data("edgeasr.recipes")
"""The shipped recipes (`models/recipes/` in the repository): `--recipe NAME` finds NAME.toml here."""


@dataclass(frozen=True)
class CalibrationOptions:
    """Which audio calibrates a method and how much of it.

    The unit is a *sequence*: up to `concat` utterances of the set joined with 0.3 s pauses (at most
    28 s of audio). A method sees `n_clips` sequences, so `n_clips * concat` utterances at most.
    """

    dataset: str = "calib-mix"
    """Data set name or manifest path (labelled sets give teacher-forced decoder inputs). The default mixes
    voices, 1-25 s lengths and noise, and shares no audio with any evaluation set (`edgeasr data list`)."""
    n_clips: int = 64
    """Number of calibration *sequences* (not utterances: each joins up to `concat` of them). 64 calib-mix
    items give ~2,000 decoder rows: fewer than a linear's inputs leave its Hessian rank-deficient."""
    concat: int = 1
    """Utterances joined into one sequence. calib-mix items are already 1-25 s long (1); sets of one- or
    two-word prompts need joining (asterisk-en-calib: 4) to give the decoder realistic positions."""
    max_decoder_tokens: int = 128
    """Decoder positions per sequence used for calibration: long items decode to ~90 tokens, and positions a
    quantized decoder never saw in calibration are where it ended early."""
    seed: int = 0
    """Seed of the utterance sample and of any random initialisation."""

    @property
    def max_utterances(self) -> int:
        """The most utterances the calibration uses (`n_clips` sequences of up to `concat`)."""
        return self.n_clips * self.concat


@dataclass(frozen=True)
class Recipe:
    """A model, a method and its bit-widths: the whole definition of a quantized checkpoint."""

    model: str
    """Zoo name, transformers directory or Hub id of the FP source model."""
    method: str = "rtn"
    """Registered method name (see `edgeasr quantize --list`)."""
    w_bits: int = 4
    """Weight bits (2-8, 16 = keep FP)."""
    a_bits: int = 16
    """Activation bits (4, 6, 8, 16 = keep FP)."""
    group_size: int = 64
    """Input columns per weight scale; 0 = one scale per output channel."""
    symmetric: bool = False
    """Symmetric weight grid (zero point at mid-range)."""
    act_symmetric: bool = False
    """Symmetric activation grid."""
    act_dynamic: bool = True
    """Per-token dynamic activation scales (False = static, calibrated)."""
    parts: tuple[str, ...] = ("encoder", "decoder")
    """Which stacks of blocks are quantized."""
    calibration: CalibrationOptions = field(default_factory=CalibrationOptions)
    options: dict = field(default_factory=dict)
    """Method options; keys are fields of the method's options dataclass."""
    layer_bits: dict = field(default_factory=dict)
    """Per-layer weight bits (module path → bits) overriding `w_bits`; absent layers get `w_bits`. Written
    by a byte-budget allocation (`edgeasr quantize --budget-mb`, see `quant.budget`)."""
    group_size_at: dict = field(default_factory=dict)
    """Group size of the layers stored at given bits (bits → group size), overriding `group_size` for them.
    Low widths need small groups to hold: GPTQ W2 on moonshine-base is ~2.5× the WER at group 32 that it is at
    group 16 (docs/budgets.md), so a mixed recipe's 2-bit layers can get smaller groups than its 4-bit ones."""

    # QuantSpec is imported where it is used: recipes (and their labels) are read on edge boards,
    # where torch, which the grid maths needs, is not installed.
    def _weight_spec(self, bits: int, group: int):
        from edgeasr.quant.spec import QuantSpec

        return QuantSpec(bits, self.symmetric, "group" if group else "channel", group or 128)

    @property
    def w_spec(self):
        return self._weight_spec(self.w_bits, self.group_size)

    def spec_at(self, bits: int):
        """The weight spec of a layer stored at `bits` (its group size from `group_size_at`, else `group_size`)."""
        return self._weight_spec(bits, self.group_size_at.get(bits, self.group_size))

    def w_spec_for(self, path: str):
        """The weight spec of the linear at module path `path` (its `layer_bits` entry, else `w_bits`)."""
        return self.spec_at(self.layer_bits.get(path, self.w_bits))

    @property
    def a_spec(self):
        from edgeasr.quant.spec import QuantSpec

        return QuantSpec(self.a_bits, self.act_symmetric, "tensor", dynamic=self.act_dynamic)

    @property
    def label(self) -> str:
        model = Path(self.model).name if "/" in self.model else self.model
        group = f"g{self.group_size}" if self.group_size else "ch"
        suffix = "".join(f"-{k}{v}" for k, v in sorted(self.options.items()))
        if self.layer_bits:  # a mixed recipe: a short digest of the map keeps labels (cache paths) apart
            digest = hashlib.sha1(repr(sorted(self.layer_bits.items())).encode()).hexdigest()[:8]
            suffix += f"-mix{digest}"
        suffix += "".join(f"-w{b}g{g}" for b, g in sorted(self.group_size_at.items()))
        return f"{model}-{self.method}-w{self.w_bits}a{self.a_bits}{group}{'-sym' if self.symmetric else ''}{suffix}"

    @property
    def cache_name(self) -> str:
        """The recipe's checkpoint folder in the cache: its label, plus a digest of the calibration when that is
        not the default, so a checkpoint tuned on someone's own audio never overwrites the generic one."""
        if self.calibration == CalibrationOptions():
            return self.label
        digest = hashlib.sha1(repr(sorted(asdict(self.calibration).items())).encode()).hexdigest()[:8]
        return f"{self.label}-cal{digest}"

    def validate(self) -> None:
        if self.w_bits == 16:
            raise QuantizationError("w_bits=16 (activation-only quantization) is not supported: QuantLinear stores "
                                    "weights as integer codes; use --w-bits 8 with --a-bits 8 for a W8A8 model")
        self.w_spec.validate_weights()
        self.a_spec.validate_activations()
        for path, bits in self.layer_bits.items():
            if not isinstance(bits, int) or bits == 16:
                raise QuantizationError(f"layer_bits[{path!r}] = {bits!r}: per-layer bits must be integers 2-8")
            self.w_spec_for(path).validate_weights()
        for bits, group in self.group_size_at.items():
            if not isinstance(bits, int) or not isinstance(group, int) or group <= 0:
                raise QuantizationError(f"group_size_at[{bits!r}] = {group!r}: bits and group sizes must be integers")
            self.spec_at(bits).validate_weights()
        unknown = set(self.parts) - {"encoder", "decoder"}
        if unknown or not self.parts:
            raise QuantizationError(f"parts must be a non-empty subset of encoder, decoder; got {self.parts}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["parts"] = list(self.parts)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Recipe":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise QuantizationError(f"unknown recipe keys {sorted(unknown)}; known: {sorted(known)}")
        data = dict(data)
        if "calibration" in data:
            data["calibration"] = CalibrationOptions(**data["calibration"])
        if "parts" in data:
            data["parts"] = tuple(data["parts"])
        if "group_size_at" in data:  # JSON and TOML keys are strings
            data["group_size_at"] = {int(b): g for b, g in data["group_size_at"].items()}
        return cls(**data)

    @classmethod
    def from_toml(cls, path: str | Path) -> "Recipe":
        path = Path(path)
        shipped = RECIPE_DIR / f"{path.name.removesuffix('.toml')}.toml"
        if not path.exists() and shipped.exists():
            path = shipped
        try:
            return cls.from_dict(tomllib.loads(path.read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise QuantizationError(f"cannot read recipe {path}: {exc}") from exc

    def to_toml(self) -> str:
        def value(v):
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, (int, float)):
                return repr(v)
            if isinstance(v, (list, tuple)):
                return "[" + ", ".join(value(x) for x in v) + "]"
            return '"' + str(v).replace('"', '\\"') + '"'

        data = self.to_dict()
        tables = ("calibration", "options", "layer_bits", "group_size_at")
        lines = [f"{k} = {value(v)}" for k, v in data.items() if k not in tables]
        lines += ["", "[calibration]"] + [f"{k} = {value(v)}" for k, v in data["calibration"].items()]
        lines += ["", "[options]"] + [f"{k} = {value(v)}" for k, v in data["options"].items()]
        if data["layer_bits"]:  # module paths hold dots: quoted keys
            lines += ["", "[layer_bits]"] + [f"{value(k)} = {value(v)}" for k, v in data["layer_bits"].items()]
        if data["group_size_at"]:  # bits as quoted keys: TOML keys are strings
            lines += ["", "[group_size_at]"] + [f'"{b}" = {g}' for b, g in data["group_size_at"].items()]
        return "\n".join(lines) + "\n"


def parse_option(text: str) -> tuple[str, object]:
    """`clip_grid=20` → ("clip_grid", 20): the `--option KEY=VALUE` argument of the CLIs (an argparse
    `type`); the value is read as TOML (numbers, booleans, quoted strings), else kept as text."""
    key, sep, value = text.partition("=")
    if not (sep and key.strip()):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. damp=0.1; got {text!r}")
    try:
        return key.strip(), tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), value


def parse_group_at(text: str) -> tuple[int, int]:
    """`2=32` → (2, 32): the `--group-at BITS=GROUP` argument of the CLIs (an argparse `type`)."""
    bits, sep, group = text.partition("=")
    if not (sep and bits.strip().isdigit() and group.strip().isdigit()):
        raise argparse.ArgumentTypeError(f"expected BITS=GROUP, e.g. 2=32; got {text!r}")
    return int(bits), int(group)
