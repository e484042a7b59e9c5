"""Is system A worse than system B on this set, or is the difference the set's noise?

Corpus WER differences of a few words on 40-50 clips are within what the choice of clips alone moves.
The paired bootstrap (Bisani & Ney, ICASSP 2004) answers that from the per-clip error counts both
systems made on the same clips: resample the clips with replacement, recompute both corpus WERs on each
resample, and read the interval of the difference. Corpus-level like `corpus_wer`: a resample's WER is
its summed errors over its summed reference words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

ClipErrors = Mapping[str, Sequence[int]]
"""Clip id → (word errors, reference words, …), as `edgeasr.bench.breakdown` stores them per row."""


@dataclass(frozen=True)
class PairedDelta:
    """WER of A minus WER of B in points, with its bootstrap interval over the shared clips."""

    delta: float
    low: float
    high: float
    clips: int
    p_a_worse: float
    """Share of resamples on which A's WER is above B's."""

    @property
    def verdict(self) -> str:
        """`worse` / `better` when the interval excludes 0, else `tie`."""
        if self.low > 0:
            return "worse"
        if self.high < 0:
            return "better"
        return "tie"

    def __str__(self) -> str:
        return f"{self.delta:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def paired_bootstrap(a: ClipErrors, b: ClipErrors, *, resamples: int = 10_000, confidence: float = 0.95,
                     seed: int = 0) -> PairedDelta:
    """WER(A) − WER(B) over the clips both were scored on, with a `confidence` percentile interval."""
    shared = sorted(set(a) & set(b))
    if not shared:
        raise ValueError("the two systems share no scored clip")
    words = np.array([a[c][1] for c in shared], dtype=np.float64)
    if any(b[c][1] != a[c][1] for c in shared):
        raise ValueError("the two systems were scored against different references")
    diff = np.array([a[c][0] - b[c][0] for c in shared], dtype=np.float64)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(shared), size=(resamples, len(shared)))
    deltas = 100.0 * diff[picks].sum(axis=1) / np.maximum(words[picks].sum(axis=1), 1.0)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(deltas, [tail, 1.0 - tail])
    return PairedDelta(100.0 * diff.sum() / words.sum(), float(low), float(high), len(shared),
                       float((deltas > 0).mean()))
