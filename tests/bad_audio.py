"""The bad and edge-case audio files every entry point must refuse with one clear line: bytes per kind,
and a fragment of the reason each must give. The steady noise and tones that must give no words are
`edgeasr.bench.noise_guard.noises()` (the guard's bench measures the same signals)."""

from __future__ import annotations

import struct

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
