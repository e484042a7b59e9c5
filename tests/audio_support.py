"""Audio files as users' recorders write them, for the tests that read user recordings."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np


def write_pcm16(path: Path, samples: np.ndarray, rate: int) -> None:
    """A 16-bit PCM WAV of any channel count (`samples` [n] or [n, channels]); edgeasr's write_wav is mono only."""
    data = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1 if data.ndim == 1 else data.shape[1])
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(data.tobytes())
