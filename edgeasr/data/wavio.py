"""Decode source audio of any container/codec with PyAV and write 16 kHz mono PCM16 wav files.

The builders normalise everything to one format so evaluation code never has to care whether a clip
came from G.722, mu-law or a 48 kHz recording.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import soxr

from edgeasr.audio import decode_with_av
from edgeasr.errors import AudioError, DatasetError

TARGET_RATE = 16_000


def decode(path: Path | str, fmt: str | None = None) -> tuple[np.ndarray, int]:
    """Decode a file to float32 mono samples in [-1, 1] at its own rate; `fmt` forces a demuxer."""
    try:
        return decode_with_av(Path(path), str(path), fmt)
    except AudioError as exc:  # the one FFmpeg decoder of the package, reported as a data-set problem here
        raise DatasetError(str(exc)) from None


def to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Resample float32 mono audio to 16 kHz with soxr (high quality), a no-op at 16 kHz."""
    if rate == TARGET_RATE:
        return samples.astype(np.float32, copy=False)
    return soxr.resample(samples, rate, TARGET_RATE, quality="HQ").astype(np.float32, copy=False)


def write_wav(path: Path, samples: np.ndarray, rate: int = TARGET_RATE) -> float:
    """Write float32 mono samples as PCM16 wav; return the duration in seconds."""
    if samples.size == 0:
        raise DatasetError(f"refusing to write the empty clip {path}")
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(pcm.tobytes())
    return round(pcm.size / rate, 3)


def convert(source: Path | str, dest: Path, fmt: str | None = None) -> float:
    """Decode `source`, resample to 16 kHz mono and write it to `dest`; return seconds."""
    samples, rate = decode(source, fmt)
    return write_wav(dest, to_16k(samples, rate))
