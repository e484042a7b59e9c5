"""Decode source audio of any container/codec with PyAV and write 16 kHz mono PCM16 wav files.

The builders normalise everything to one format so evaluation code never has to care whether a clip
came from G.722, mu-law or a 48 kHz recording.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import soxr

from edgeasr.errors import DatasetError

TARGET_RATE = 16_000


def decode(path: Path | str, fmt: str | None = None) -> tuple[np.ndarray, int]:
    """Decode a file to float32 mono samples in [-1, 1] at its own rate; `fmt` forces a demuxer."""
    try:
        import av
    except ImportError:
        raise DatasetError("decoding source audio needs PyAV: pip install av (or edgeasr[quant])") from None
    try:
        with av.open(str(path), format=fmt) as container:
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate
            # Let FFmpeg do the channel downmix and sample-format conversion in one place.
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            chunks = [out.to_ndarray().reshape(-1)
                      for frame in container.decode(stream) for out in resampler.resample(frame)]
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    except av.error.FFmpegError as exc:
        raise DatasetError(f"could not decode {path}: {exc}") from None
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return samples.astype(np.float32, copy=False), int(rate)


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
