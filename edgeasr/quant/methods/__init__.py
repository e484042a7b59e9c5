"""Registry of quantization methods: one file per method, listed in `METHODS` (the `edgeasr.plugins`
pattern) and imported only when used.

A method is a function `(job: QuantJob, options) -> None` that replaces the target linears of
`job.model` with `QuantLinear`s, declared with `@register(...)`, which attaches its `MethodInfo`. Its
options are a dataclass whose fields a recipe's `[options]` table sets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from edgeasr.errors import QuantizationError
from edgeasr.plugins import load

METHODS: dict[str, str] = {
    "rtn": "edgeasr.quant.methods.rtn:rtn",
    "gptq": "edgeasr.quant.methods.gptq:gptq",
    "awq": "edgeasr.quant.methods.awq:awq",
    "smoothquant": "edgeasr.quant.methods.smoothquant:smoothquant",
    "osplus": "edgeasr.quant.methods.osplus:osplus",
    "omniquant": "edgeasr.quant.methods.omniquant:omniquant",
    "quarot": "edgeasr.quant.methods.quarot:quarot",
    "quik": "edgeasr.quant.methods.quik:quik",
    "spqr": "edgeasr.quant.methods.spqr:spqr",
    "hqq": "edgeasr.quant.methods.hqq:hqq",
}
"""RTN is the baseline; the next eight are the study's methods; HQQ (calibration-free) is the ninth."""

REVISIONS: dict[str, int] = {"hqq": 2, "osplus": 2}
"""Methods whose default output changed while their recipes (and so their cache labels) stayed the same, and
how often (absent = 1). Checkpoints and bundles record the revision that made them and the caches skip one
made at another, so a recipe never runs on a stale fit. HQQ 2: the paper's real-valued zero point (session 13)
replaced an integer zero point with a refitted scale. OS+ 2: scaling only by default (`shift = "never"`;
revision 1 searched a channel shift per site, now `shift = "search"`; session 17)."""


def method_revision(name: str) -> int:
    return REVISIONS.get(name, 1)


def revision_key(method: str) -> dict:
    """What a cache or row key holds of the method's revision: nothing at 1, so keys made before revisions existed
    (every method never revised) stay valid."""
    revision = method_revision(method)
    return {} if revision == 1 else {"method_revision": revision}


def made_by_current_revision(method: str, meta: dict) -> bool:
    """Whether a checkpoint's, bundle's or sweep row's metadata (its `method_revision`, absent or null = 1) is this
    edgeasr's method."""
    return (meta.get("method_revision") or 1) == method_revision(method)


def no_input_vectors(_options) -> int:
    return 0


@dataclass(frozen=True)
class MethodInfo:
    name: str
    run: Callable
    options: type
    calibrated: bool | Callable[[object], bool]
    """Needs calibration audio (block-wise walk); a function of the options where only some settings do."""
    needs_activation_quant: bool = False
    """Only meaningful when activations are quantized (a_bits < 16)."""
    summary: str = ""
    input_vectors: Callable[[object], int] = no_input_vectors
    """Per-input-channel vectors (`in_scale`, `in_shift`) the method adds to every linear it quantizes, given its
    options: a byte budget must pay for them before it chooses bits."""

    def uses_calibration(self, values: dict) -> bool:
        """Whether this method, with these option values, reads calibration audio."""
        return self.calibrated(self.make_options(values)) if callable(self.calibrated) else self.calibrated

    def make_options(self, values: dict):
        names = {f.name for f in dataclasses.fields(self.options)}
        unknown = set(values) - names
        if unknown:
            raise QuantizationError(f"{self.name} has no option(s) {sorted(unknown)}; its options are {sorted(names)}")
        return self.options(**values)


def register(name: str, options: type, *, calibrated: bool | Callable[[object], bool],
             needs_activation_quant: bool = False, summary: str = "",
             input_vectors: Callable[[object], int] = no_input_vectors) -> Callable:
    """Declare a method function: attach its `MethodInfo` (the `METHODS` table says where it lives)."""
    def decorator(fn: Callable) -> Callable:
        fn.method_info = MethodInfo(name, fn, options, calibrated, needs_activation_quant, summary, input_vectors)
        return fn

    return decorator


def get_method(name: str) -> MethodInfo:
    if name not in METHODS:
        raise QuantizationError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    info = load(METHODS[name]).method_info
    if info.name != name:
        raise QuantizationError(f"METHODS[{name!r}] points at the method declared as {info.name!r}")
    return info


def available_methods() -> dict[str, MethodInfo]:
    return {name: get_method(name) for name in sorted(METHODS)}
