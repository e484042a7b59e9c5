"""Line events a streaming session emits; plain dataclasses that serialize to JSON dicts.

Kept free of numpy, torch and webrtcvad so the server, the demo and clients can import them cheaply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class LineEvent:
    """What every line event carries. Times are audio seconds since the session's first sample."""

    line_id: int
    start: float
    """Where the line's audio begins (pre-roll included)."""
    end: float
    """How far into the audio the text was decoded."""
    text: str
    """The line's text so far; always starts with `committed`."""
    committed: str
    """Prefix of `text` that no later event of this line will change."""

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        cost = data.get("cost")
        if cost is not None:
            data["cost"] = cost.to_dict() if hasattr(cost, "to_dict") else asdict(cost)
        return {"type": type(self).__name__, **data}


@dataclass
class LineStarted(LineEvent):
    """A line got its first text."""


@dataclass
class LineChanged(LineEvent):
    """The partial text of an open line changed."""


@dataclass
class LineCompleted(LineEvent):
    """The final text of a line; no more events follow for it."""

    latency_ms: float = 0.0
    """End of speech (last voiced frame) to this event, on the session's real-time clock."""
    finalize_ms: float = 0.0
    """End-of-speech decision (after the VAD hangover) to this event."""
    decode_ms: float = 0.0
    """Compute time of the decode that produced the final text."""
    cost: Any = None
    """The engine's cost readout of this utterance (`Transcript.cost`), when it has one."""
    ended_by: str = "hangover"
    """What ended the line: "smart" (end-of-turn model), "hangover" (VAD), "cut" (overlong line), "finish"."""
    turn_probability: float | None = None
    """The end-of-turn model's P(turn complete) at the line's last scored pause, if it was scored."""
    backlog_ms: float = 0.0
    """Of `latency_ms`, the time the session was still busy with earlier audio when the audio that ended
    the line arrived (0 while it keeps up with real time; large on a CPU shared with other work)."""


Event = LineStarted | LineChanged | LineCompleted

EVENT_TYPES: dict[str, type[LineEvent]] = {cls.__name__: cls for cls in (LineStarted, LineChanged, LineCompleted)}


def event_from_dict(data: dict[str, Any]) -> LineEvent:
    """Rebuild an event from `to_dict()` output (a client reading the server's JSON); cost stays a dict."""
    fields_ = dict(data)
    cls = EVENT_TYPES[fields_.pop("type")]
    return cls(**fields_)
