"""What a transcription returns: the text, its tokens, timings and the guard signals."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Segment:
    """One piece of audio decoded on its own (long audio is cut on silence)."""

    start: float
    end: float
    text: str
    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float | None
    compression_ratio: float
    dropped: str | None = None
    """Why the guard dropped this segment's text (None when kept)."""


@dataclass
class Transcript:
    text: str
    tokens: list[int]
    audio_seconds: float
    encode_seconds: float
    decode_seconds: float
    segments: list[Segment] = field(default_factory=list)
    cost: Any = None
    """A `metrics.cost.CostReport` for this utterance when the engine can estimate one."""

    @property
    def seconds(self) -> float:
        return self.encode_seconds + self.decode_seconds

    @property
    def rtfx(self) -> float:
        """Audio seconds per compute second (the Open ASR Leaderboard's inverse real-time factor)."""
        return self.audio_seconds / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["cost"] = self.cost.to_dict() if hasattr(self.cost, "to_dict") else self.cost
        # Nothing decoded (silence): no speed to report, and JSON has no Infinity.
        data["rtfx"] = self.rtfx if self.seconds > 0 else None
        return data
