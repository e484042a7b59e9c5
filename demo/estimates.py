"""How long a recipe takes to prepare the first time, from the quantization times the study recorded.

The sweep writes `quantize_seconds` into every cell it quantized afresh; the median of those cells
for the same model, method and weight bits is what the UI announces before a slow recipe starts
(and counts against while it runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

from .engines import FP, EngineKey
from .study import load_results

SLOW_SECONDS = 20.0
"""Preparations expected to take longer than this are announced before they start."""


@dataclass(frozen=True)
class Estimate:
    """A recorded preparation time and what it was recorded on."""

    seconds: float
    basis: str
    """Which study cells the figure comes from, in words."""

    @property
    def slow(self) -> bool:
        return self.seconds >= SLOW_SECONDS


def duration(seconds: float) -> str:
    """A rough duration in words: "a few seconds", "about 40 s", "about 3 min"."""
    if seconds < 5:
        return "a few seconds"
    if seconds < 90:
        return f"about {round(seconds / 5) * 5:.0f} s"
    return f"about {round(seconds / 60):.0f} min"


@lru_cache(maxsize=4)
def _fresh_cells(results_dir: Path) -> pd.DataFrame:
    """Study cells that quantized from scratch (a cached checkpoint says nothing about the time)."""
    table = load_results(results_dir).table
    if "quantize_seconds" not in table:
        return pd.DataFrame()
    fresh = table[pd.to_numeric(table["quantize_seconds"], errors="coerce").notna()]
    if "checkpoint_cached" in fresh:
        fresh = fresh[fresh["checkpoint_cached"].astype("boolean").fillna(False).eq(False)]
    return fresh


def estimate(key: EngineKey, results_dir: Path) -> Estimate | None:
    """Recorded preparation time of `key` (same model, method and bits; else the same model and method)."""
    if key.method == FP:
        return None
    cells = _fresh_cells(results_dir)
    if cells.empty:
        return None
    same = cells[(cells["model"] == key.model) & (cells["method"] == key.method)]
    if "a_bits" in same:  # the demo's recipes keep 16-bit activations
        same = same[same["a_bits"].fillna(16) >= 16]
    exact = same[same["w_bits"] == key.bits] if "w_bits" in same else same.iloc[0:0]
    chosen, which = (exact, f"W{key.bits}") if not exact.empty else (same, "all bit-widths")
    if chosen.empty:
        return None
    threads = chosen["threads"].dropna().unique() if "threads" in chosen else []
    on = f", {int(threads[0])} thread{'s' if threads[0] != 1 else ''}" if len(threads) == 1 else ""
    basis = (f"median of {len(chosen)} study cell{'s' if len(chosen) != 1 else ''}: "
             f"{key.method} on {key.model}, {which}{on}")
    return Estimate(float(chosen["quantize_seconds"].median()), basis)


def announce(key: EngineKey, results_dir: Path) -> str:
    """One line telling the user how long the first use of `key` takes ("" for FP or without a record)."""
    found = estimate(key, results_dir)
    if found is None:
        return ""
    mark = "⏳ " if found.slow else ""
    return (f"{mark}{key.label}: its first use quantizes it, {duration(found.seconds)} on this kind of machine "
            f"({found.basis}), then exports the bundle; both are cached afterwards.")
