"""The WebSocket wire schema, shared by `edgeasr.client` and the server: message types, the config
message, close codes, frame encoding and the JSON rules (documented in docs/protocol-reliability.md
and docs/protocol.md).

Torch-free and server-free (numpy only), so a client on an edge board imports it without the server
stack. The server adds only what needs its own dependencies (resampling) in `server/protocol.py`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

TOKEN_ENV = "EDGEASR_SERVER_TOKEN"
"""Environment variable holding the shared secret, read by the server and the client."""
STREAM_PATH = "/v1/stream"

# Message types. The client sends CONFIG (first, text), binary audio frames, then END (text).
CONFIG, END = "config", "end"
# The server sends READY, the session's line events (edgeasr.stream.events), ACK (block mode only),
# DROPPED, ERROR and, last of all on every stream that got past the handshake, SUMMARY.
READY, ACK, DROPPED, ERROR, SUMMARY = "ready", "ack", "dropped", "error", "summary"

# Close codes (4000-4999 are the application range of RFC 6455). Each close is preceded by an
# {"type": "error", "code": <name>, ...} event and a summary, except when the peer is already gone.
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
OVERFLOW_MODES = ("drop", "block")
MIN_RATE, MAX_RATE = 8000, 192000
MAX_TEXT_BYTES = 16 * 1024
"""Largest text message (config or end) the server parses; configs are a few hundred bytes."""
MAX_JSON_DEPTH = 8
"""Deepest nesting of objects/arrays a text message may have (a config needs 2)."""
RECIPE_FIELDS: dict[str, type] = {"model": str, "method": str, "w_bits": int, "a_bits": int, "group_size": int}
RECIPE_REQUIRED = ("model", "method", "w_bits")


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
        return {"type": ERROR, "code": self.code, "close_code": self.close_code, "message": self.message}


# -- JSON ---------------------------------------------------------------------------------------

def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(data: Any, **kwargs) -> str:
    """JSON text with every non-finite float (inf, NaN) as null: `Infinity` is not JSON."""
    return json.dumps(_finite(data), allow_nan=False, **kwargs)


def _depth(text: str) -> int:
    """Deepest bracket nesting of JSON text, skipping brackets inside strings (a linear scan, no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_text(text: str, code: str) -> Any:
    """Parse a client's text message within the size and depth limits; ProtocolError(code) otherwise."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        raise ProtocolError(code, f"text message over {MAX_TEXT_BYTES} bytes")
    if _depth(text) > MAX_JSON_DEPTH:
        raise ProtocolError(code, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        raise ProtocolError(code, f"not valid JSON: {exc}") from None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def is_end(data: Any) -> bool:
    return isinstance(data, dict) and data.get("type") == END


# -- config -------------------------------------------------------------------------------------

def _config_error(message: str) -> ProtocolError:
    return ProtocolError("invalid_config", message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_recipe(recipe: Any) -> None:
    example = '{"model": "moonshine-tiny", "method": "rtn", "w_bits": 8}'
    if not isinstance(recipe, dict):
        raise _config_error(f"recipe must be an object like {example}")
    missing = [k for k in RECIPE_REQUIRED if k not in recipe]
    unknown = sorted(set(recipe) - set(RECIPE_FIELDS))
    if missing or unknown:
        raise _config_error(f"recipe needs {', '.join(RECIPE_REQUIRED)} (optional a_bits, group_size); "
                            f"missing {missing}, unknown {unknown}")
    for key, value in recipe.items():
        kind = RECIPE_FIELDS[key]
        if not (_is_int(value) if kind is int else isinstance(value, kind)):
            raise _config_error(f"recipe.{key} must be {'an integer' if kind is int else 'a string'}, "
                                f"got {value!r}")


@dataclass(frozen=True, kw_only=True)
class StreamRequest:
    """What a client asks of the server for one stream: the config message less the audio's sample rate.

    The one definition of these fields: `StreamConfig` (the message) and `edgeasr.client.ClientOptions`
    both derive from it.
    """

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
    than real time; the server acknowledges decoded audio with `ack` events so the client can pace itself)."""
    end_of_turn: str | None = None
    """"smart" (Smart Turn ends a line at a short pause when the sentence sounds finished) or "vad" (the
    VAD hangover only); None = the server's default (`SessionOptions`)."""
    vad: str | None = None
    """"webrtc" (webrtcvad alone) or "silero" (a frame is speech only when Silero VAD agrees: no lines
    opened by radio static); None = the server's default (webrtc)."""


@dataclass(frozen=True)
class StreamConfig(StreamRequest):
    """The client's opening message: which model, and how the audio frames are encoded.

    `StreamConfig(16000, model="moonshine-tiny")`: the sample rate is positional, the request fields
    keyword-only.
    """

    sample_rate: int
    """Rate of the audio the client sends; the server resamples to 16 kHz."""

    @classmethod
    def of(cls, request: StreamRequest, sample_rate: int) -> "StreamConfig":
        """The config message for `request` (or any subclass, e.g. the client's options) with audio at `sample_rate`."""
        return cls(sample_rate, **{f.name: getattr(request, f.name) for f in fields(StreamRequest)})

    def message(self) -> str:
        """The config as the client sends it (None fields left out)."""
        data = asdict(self)
        data = {"sample_rate": data.pop("sample_rate"), **data}
        return dumps({"type": CONFIG, **{k: v for k, v in data.items() if v is not None}})

    @classmethod
    def parse(cls, text: str) -> "StreamConfig":
        """Validate the first message strictly (types included); raise ProtocolError('invalid_config')."""
        data = parse_text(text, "invalid_config")
        if not isinstance(data, dict):
            raise _config_error('the first message must be a JSON object, e.g. {"sample_rate": 16000, "encoding": "pcm16"}')
        if data.pop("type", CONFIG) != CONFIG:
            raise _config_error(f'the first message must be the config (type "{CONFIG}" or no type)')
        allowed = sorted(cls.__dataclass_fields__)
        unknown = set(data) - set(allowed)
        if unknown:
            raise _config_error(f"unknown config keys {sorted(unknown)}; allowed: {allowed}")
        rate = data.get("sample_rate")
        if rate is None:
            raise _config_error("sample_rate is required (Hz of the audio you will send)")
        if not _is_int(rate) or not MIN_RATE <= rate <= MAX_RATE:
            raise _config_error(f"sample_rate must be an integer between {MIN_RATE} and {MAX_RATE} Hz, got {rate!r}")
        encoding = data.get("encoding", "pcm16")
        if encoding not in ENCODINGS:
            raise _config_error(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        chosen = [k for k in ("model", "recipe", "checkpoint") if data.get(k) is not None]
        if len(chosen) > 1:
            raise _config_error(f"give one of model / recipe / checkpoint, not {chosen}")
        for key in ("model", "checkpoint"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise _config_error(f"{key} must be a string, got {data[key]!r}")
        if data.get("recipe") is not None:
            _check_recipe(data["recipe"])
        partials = data.get("partials", True)
        if not isinstance(partials, bool):
            raise _config_error(f"partials must be true or false (a JSON boolean), got {partials!r}")
        queue = data.get("max_queue_seconds")
        if queue is not None and (not _is_number(queue) or queue <= 0):
            raise _config_error(f"max_queue_seconds must be a positive number, got {queue!r}")
        overflow = data.get("overflow", "drop")
        if overflow not in OVERFLOW_MODES:
            raise _config_error(f"overflow must be one of {OVERFLOW_MODES}, got {overflow!r}")
        from edgeasr.stream.turn import END_OF_TURN_MODES

        end_of_turn = data.get("end_of_turn")
        if end_of_turn is not None and end_of_turn not in END_OF_TURN_MODES:
            raise _config_error(f"end_of_turn must be one of {END_OF_TURN_MODES}, got {end_of_turn!r}")
        from edgeasr.stream.vad import VAD_KINDS

        vad = data.get("vad")
        if vad is not None and vad not in VAD_KINDS:
            raise _config_error(f"vad must be one of {VAD_KINDS}, got {vad!r}")
        return cls(rate, encoding=encoding, model=data.get("model"), recipe=data.get("recipe"),
                   checkpoint=data.get("checkpoint"), partials=partials, max_queue_seconds=queue, overflow=overflow,
                   end_of_turn=end_of_turn, vad=vad)


# -- audio frames -------------------------------------------------------------------------------

def encode_frame(chunk: np.ndarray, encoding: str) -> bytes:
    """float samples in [-1, 1] → one binary frame in `encoding`."""
    chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
    if encoding == "pcm16":
        return (np.clip(chunk, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    return chunk.astype("<f4").tobytes()


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
