"""Registry of quantization methods: one file per method, each registering itself by name.

A method is a function `(job: QuantJob, options) -> None` that replaces the target linears of
`job.model` with `QuantLinear`s. Its options are a dataclass whose fields a recipe's `[options]` table
sets. Importing this package imports every method module so the registry is complete.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from edgeasr.errors import QuantizationError


@dataclass(frozen=True)
class MethodInfo:
    name: str
    run: Callable
    options: type
    calibrated: bool
    """Needs calibration audio (block-wise walk)."""
    needs_activation_quant: bool = False
    """Only meaningful when activations are quantized (a_bits < 16)."""
    summary: str = ""

    def make_options(self, values: dict):
        names = {f.name for f in dataclasses.fields(self.options)}
        unknown = set(values) - names
        if unknown:
            raise QuantizationError(f"{self.name} has no option(s) {sorted(unknown)}; its options are {sorted(names)}")
        return self.options(**values)


METHODS: dict[str, MethodInfo] = {}


def register(name: str, options: type, *, calibrated: bool, needs_activation_quant: bool = False,
             summary: str = "") -> Callable:
    def decorator(fn: Callable) -> Callable:
        METHODS[name] = MethodInfo(name, fn, options, calibrated, needs_activation_quant, summary)
        return fn

    return decorator


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def get_method(name: str) -> MethodInfo:
    _load_all()
    if name not in METHODS:
        raise QuantizationError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def available_methods() -> dict[str, MethodInfo]:
    _load_all()
    return dict(sorted(METHODS.items()))
