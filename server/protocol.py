"""Wire protocol: close codes, the opening config message, and audio frame decoding.

Kept free of FastAPI so the client and tests can import the codes without the server stack.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeasr.audio import SAMPLE_RATE

# Close codes (4000-4999 are the application range of RFC 6455). Each close is preceded by an
# {"type": "error", "code": <name>, ...} event, except when the peer is already gone.
CLOSE_CODES: dict[str, int] = {
    "invalid_config": 4400,
    "unauthorized": 4401,
    "unknown_model": 4404,
    "idle_timeout": 4408,
    "session_too_long": 4409,
    "frame_too_large": 4413,
    "bad_frame": 4415,
    "unexpected_text": 4416,
    "too_many_clients": 4429,
    "model_unavailable": 4503,
    "internal_error": 1011,
}

ENCODINGS = ("pcm16", "float32")
MIN_RATE, MAX_RATE = 8000, 192000


class ProtocolError(Exception):
    """A client mistake that ends the connection with `code` (a key of CLOSE_CODES)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def close_code(self) -> int:
        return CLOSE_CODES[self.code]

    def event(self) -> dict[str, Any]:
        return {"type": "error", "code": self.code, "close_code": self.close_code, "message": self.message}


@dataclass(frozen=True)
class StreamConfig:
    """The client's opening message: which model, and how the audio frames are encoded."""

    sample_rate: int
    """Rate of the audio the client sends; the server resamples to 16 kHz."""
    encoding: str = "pcm16"
    """"pcm16" (little-endian int16) or "float32" (little-endian, [-1, 1]); mono."""
    model: str | None = None
    """A served model name (see GET /models); None = the server's default."""
    recipe: dict | None = None
    """{"model", "method", "w_bits"[, "a_bits", "group_size"]}: a quantized checkpoint the server has."""
    checkpoint: str | None = None
    """Name (label) of a quantized checkpoint in the server's cache."""
    partials: bool = True
    """Send LineStarted/LineChanged partials (False: finals only, cheapest)."""
    max_queue_seconds: float | None = None
    """Lower the server's per-connection queue bound: less lag behind real time, more dropped audio."""
    overflow: str = "drop"
    """When the queue is full: "drop" new audio (live sources) or "block" reading (file replays faster
    than real time; TCP flow control then slows the sender)."""

    @classmethod
    def parse(cls, text: str) -> "StreamConfig":
        """Validate the first message; raise ProtocolError('invalid_config') saying what is wrong."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProtocolError("invalid_config", f"the first message must be a JSON object: {exc}") from None
        if not isinstance(data, dict):
            raise ProtocolError("invalid_config", "the first message must be a JSON object, "
                                                  'e.g. {"sample_rate": 16000, "encoding": "pcm16"}')
        data.pop("type", None)  # {"type": "config", ...} is accepted too
        unknown = set(data) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ProtocolError("invalid_config", f"unknown config keys {sorted(unknown)}; "
                                                  f"allowed: {sorted(cls.__dataclass_fields__)}")
        rate = data.get("sample_rate")
        if rate is None:
            raise ProtocolError("invalid_config", "sample_rate is required (Hz of the audio you will send)")
        if not isinstance(rate, int) or isinstance(rate, bool) or not MIN_RATE <= rate <= MAX_RATE:
            raise ProtocolError("invalid_config", f"sample_rate must be an integer between {MIN_RATE} and "
                                                  f"{MAX_RATE} Hz, got {rate!r}")
        encoding = data.get("encoding", "pcm16")
        if encoding not in ENCODINGS:
            raise ProtocolError("invalid_config", f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        chosen = [k for k in ("model", "recipe", "checkpoint") if data.get(k) is not None]
        if len(chosen) > 1:
            raise ProtocolError("invalid_config", f"give one of model / recipe / checkpoint, not {chosen}")
        for key in ("model", "checkpoint"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ProtocolError("invalid_config", f"{key} must be a string")
        if data.get("recipe") is not None and not isinstance(data["recipe"], dict):
            raise ProtocolError("invalid_config", 'recipe must be an object like '
                                                  '{"model": "moonshine-tiny", "method": "rtn", "w_bits": 8}')
        queue = data.get("max_queue_seconds")
        if queue is not None and (not isinstance(queue, (int, float)) or isinstance(queue, bool) or queue <= 0):
            raise ProtocolError("invalid_config", f"max_queue_seconds must be a positive number, got {queue!r}")
        overflow = data.get("overflow", "drop")
        if overflow not in ("drop", "block"):
            raise ProtocolError("invalid_config", f'overflow must be "drop" or "block", got {overflow!r}')
        return cls(rate, encoding, data.get("model"), data.get("recipe"), data.get("checkpoint"),
                   bool(data.get("partials", True)), queue, overflow)


def decode_frame(payload: bytes, encoding: str) -> np.ndarray:
    """Binary frame → float32 samples; odd-sized or non-finite frames raise ProtocolError('bad_frame')."""
    width = 2 if encoding == "pcm16" else 4
    if len(payload) % width:
        raise ProtocolError("bad_frame", f"{encoding} frames must be a whole number of {width}-byte samples; "
                                         f"got {len(payload)} bytes")
    if encoding == "pcm16":
        return np.frombuffer(payload, "<i2").astype(np.float32) / 32768.0
    samples = np.frombuffer(payload, "<f4").astype(np.float32)
    if not np.isfinite(samples).all():
        raise ProtocolError("bad_frame", "float32 frame holds NaN or infinite samples")
    return samples


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
