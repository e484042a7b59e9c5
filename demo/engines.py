"""Process-wide engine cache keyed by (model, method, bits, engine), so switching recipes never reloads one.

Every engine comes from `edgeasr.resolver`: the packed bundle (ONNX Runtime, what a board runs) whenever one
can represent the recipe, quantized and exported once into the cache on first use (seconds to a few minutes,
with a progress bar), else the torch fake-quant model. `engine.describe()["engine"]` says which ran.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from edgeasr.engine import Engine
from edgeasr.resolver import FP, ResolveOptions, Target, recipe_target, resolve

log = logging.getLogger(__name__)

BIT_CHOICES = (8, 6, 4, 3, 2)
"""Weight bit-widths offered by the pickers (activations stay at 16 bits)."""

Progress = Callable[..., object]
"""`gr.Progress`-like callable: progress(fraction, desc=...)."""


@dataclass(frozen=True)
class EngineKey:
    """Which engine to run: a zoo model, a method (or FP), its weight bits, and bundle / torch / auto."""

    model: str
    method: str = FP
    bits: int = 16
    engine: str = ResolveOptions.engine

    @classmethod
    def of(cls, model: str, method: str, bits: int | float | str | None,
           engine: str = ResolveOptions.engine) -> "EngineKey":
        """Normalize picker values; FP ignores the bit picker so it maps to one cache entry."""
        if method == FP:
            return cls(model, FP, 16, engine)
        return cls(model, method, int(bits or 4), engine)

    @property
    def label(self) -> str:
        if self.method == FP:
            return f"{self.model} · FP"
        return f"{self.model} · {self.method.upper()} W{self.bits}A16"

    @property
    def target(self) -> Target:
        return recipe_target(self.model, self.method, self.bits)


_engines: dict[EngineKey, Engine] = {}
_key_locks: dict[EngineKey, threading.Lock] = {}
_table_lock = threading.Lock()


def get_engine(key: EngineKey, progress: Progress | None = None) -> Engine:
    """The cached engine for `key`, resolved (quantized and exported on first use) the first time.

    One lock per key: two browser sessions asking for the same new recipe build it once, while
    requests for recipes already loaded never wait behind a build.
    """
    with _table_lock:
        if key in _engines:
            return _engines[key]
        lock = _key_locks.setdefault(key, threading.Lock())
    with lock:
        if key in _engines:
            return _engines[key]
        report = None if progress is None else (lambda fraction, message: progress(fraction, desc=message))
        log.info("loading engine %s", key.label)
        engine = resolve(key.target, ResolveOptions(engine=key.engine), report)
        with _table_lock:
            _engines[key] = engine
        return engine


def bits_picker_props(method: str) -> dict:
    """The bit picker only means something for a quantization method: grey it out (and say so) for FP."""
    return {"interactive": method != FP, "label": "Weight bits" if method != FP else "Weight bits (unused by fp)"}


def model_choices(default: str) -> list[str]:
    """Zoo models that can be rebuilt offline or are already cached, default first."""
    from edgeasr.zoo.catalog import CATALOG
    from edgeasr.zoo.fetch import is_cached

    names = [name for name, entry in CATALOG.items() if entry.offline or is_cached(name)]
    return [default] + [n for n in names if n != default]


def method_choices() -> list[str]:
    from edgeasr.quant.methods import available_methods

    return [FP, *available_methods()]
