"""The bad and edge-case audio files every entry point must refuse with one clear line: bytes per kind,
and a fragment of the reason each must give. Also steady noise and tones, which must give no words."""

from __future__ import annotations

import struct

import numpy as np

from edgeasr.audio import SAMPLE_RATE


def _wav(channels: int, data: bytes = b"", rate: int = SAMPLE_RATE, bits: int = 16) -> bytes:
    """A PCM WAV built field by field, so a header can say what no writer would (0 channels)."""
    block = max(channels, 1) * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


# kind → (file bytes, what the message must say)
BAD_FILES: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "empty file (0 bytes)"),
    "zero_channels": (_wav(0, b"\0" * 3200), "declares 0 channels"),
    "header_only": (_wav(1), "no samples"),
    "one_sample": (_wav(1, b"\x10\x00"), "only 1 sample"),
    "text": (b"this is a shopping list, not a recording\nmilk\neggs\n", "a text file, not audio"),
    "png": (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + b"\0" * 64, "a PNG image, not audio"),
}


def pink_noise(seconds: float, dbfs: float, seed: int = 0) -> np.ndarray:
    """Noise with power falling as 1/f, scaled to an RMS of `dbfs` relative to full scale."""
    n = int(seconds * SAMPLE_RATE)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    freqs[0] = freqs[1]
    noise = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    return (noise / np.sqrt(np.mean(noise**2)) * 10 ** (dbfs / 20)).astype(np.float32)


def white_noise(seconds: float, dbfs: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE))
    return (noise * 10 ** (dbfs / 20)).astype(np.float32)


def tone(seconds: float, hz: float, dbfs: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (np.sqrt(2) * 10 ** (dbfs / 20) * np.sin(2 * np.pi * hz * t)).astype(np.float32)


# The cases plus louder noise and tones webrtcvad calls speech (measured: all decoded to words before the guard).
NOISES: dict[str, np.ndarray] = {
    "pink -30 dBFS 60 s": pink_noise(60, -30),
    "pink -30 dBFS 0.5 s": pink_noise(0.5, -30, seed=3),
    "white -30 dBFS 20 s": white_noise(20, -30),
    "white -20 dBFS 10 s": white_noise(10, -20),
    "tone 440 Hz -20 dBFS 10 s": tone(10, 440, -20),
    "tone 200 Hz -30 dBFS 10 s": tone(10, 200, -30),
}
