"""What is true of a loaded engine, for the readouts: which engine runs it (bundle or torch), what its
weights take as stored, and how much resident memory it added when it loaded (measured).

Stored sizes come from the cost model (`edgeasr.metrics.cost.model_size`), which counts every
unquantized tensor at 16 bits: the demo's baseline convention is FP16 (the research backend holds an
FP model as fp32 in RAM, twice that). Resident memory is the process's RSS growth across the load,
with the heavy libraries imported beforehand so the first engine is not charged for them.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import threading
from dataclasses import dataclass
from functools import cache

from edgeasr.engine import Engine
from edgeasr.heap import release_free_heap

from .engines import EngineKey, Progress, get_engine

log = logging.getLogger(__name__)

RUNTIME_LIBRARIES = ("numpy", "onnxruntime", "torch", "transformers")
"""Imported before the first measured load, so no engine's resident memory includes them."""


@dataclass(frozen=True)
class EngineFacts:
    """Model-only readouts of one engine: they hold whatever the audio was."""

    kind: str
    """"bundle" (ONNX Runtime, packed weights: what the board runs) or "torch" (fake-quant research model)."""
    kind_note: str | None
    """Why this recipe runs on torch, when the engine says so."""
    w_bits: int
    """Weight bits of the recipe (16 for FP)."""
    weight_bytes: int
    """Stored weight bytes (quantized codes with their scales and zeros; FP tensors at 16 bits)."""
    fp16_weight_bytes: int
    """The same model with every weight at 16 bits: the baseline the ratios are read against."""
    effective_bits: float | None
    """Stored bits per quantized weight (codes, scales, zeros, outliers); None for an FP model."""
    total_bytes: int | None
    """Everything the bundle holds (every file); for a torch engine, what its bundle would hold."""
    resident_bytes: int | None
    """RSS the process gained when this engine loaded; None when not measured."""
    resident_note: str | None = None
    """Why resident memory was not measured."""


def _rss_bytes() -> int | None:
    """Resident set size of this process (Linux /proc); None elsewhere."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


@cache
def _import_runtime_libraries() -> None:
    for name in RUNTIME_LIBRARIES:
        try:
            importlib.import_module(name)
        except ImportError:  # a torch-free install simply has fewer libraries to pre-load
            log.debug("%s not installed; not pre-imported", name)


_resident: dict[EngineKey, tuple[int | None, str | None]] = {}
_measure_lock = threading.Lock()


def is_loaded(key: EngineKey) -> bool:
    """Whether `key` has been loaded through `load` (so using it now costs no preparation)."""
    return key in _resident


def load(key: EngineKey, progress: Progress | None = None) -> Engine:
    """The cached engine for `key` (see `get_engine`), measuring the RSS it adds the first time it loads.

    New loads are measured one at a time so that two loads never share one RSS difference; engines
    already measured are returned without waiting.
    """
    if key in _resident:
        return get_engine(key, progress)
    with _measure_lock:
        if key in _resident:
            return get_engine(key, progress)
        _import_runtime_libraries()
        gc.collect()
        release_free_heap()
        before = _rss_bytes()
        engine = get_engine(key, progress)
        # What quantizing on first use allocated and freed is not the engine's: hand it back first.
        gc.collect()
        release_free_heap()
        after = _rss_bytes()
        if before is None or after is None:
            _resident[key] = None, "not measured on this OS"
        else:
            _resident[key] = max(0, after - before), None
        return engine


_facts: dict[tuple[EngineKey, int], EngineFacts] = {}


def facts(key: EngineKey, engine: Engine) -> EngineFacts:
    """The model-only readouts of a loaded engine (computed once per engine)."""
    found = _facts.get((key, id(engine)))
    if found is None:
        found = _facts[key, id(engine)] = _describe(key, engine)
    return found


def _describe(key: EngineKey, engine: Engine) -> EngineFacts:
    from edgeasr.metrics.cost import model_size

    info = engine.describe()
    size = model_size(engine)
    resident, resident_note = _resident.get(key, (None, "loaded before the demo measured it"))
    return EngineFacts(
        kind=info["engine"], kind_note=info.get("engine_reason"), w_bits=key.bits, weight_bytes=size.weight_bytes,
        fp16_weight_bytes=size.fp16_weight_bytes, effective_bits=size.effective_bits,
        total_bytes=size.total_bytes, resident_bytes=resident, resident_note=resident_note)


def warm_up(keys: list[EngineKey]) -> None:
    """Load (and measure) engines ahead of the first click; run in a background thread at start-up."""
    for key in keys:
        try:
            load(key)
        except Exception:  # noqa: BLE001 - a failed warm-up only means the first click loads it, and says why
            log.warning("warm-up of %s failed; it will load on first use", key.label, exc_info=True)
