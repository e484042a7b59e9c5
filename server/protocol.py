"""Server-only wire helpers: the streaming resampler. The schema itself (message types, config, close
codes, frames) is `edgeasr.protocol`, shared with the client."""

from __future__ import annotations

import numpy as np

from edgeasr.audio import SAMPLE_RATE


class Resampler:
    """Streaming resampler to 16 kHz; keeps filter state across frames so chunk edges leave no clicks."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._stream = None
        if rate != SAMPLE_RATE:
            import soxr

            self._stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")

    def __call__(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples, last=last)
