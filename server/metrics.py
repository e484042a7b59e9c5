"""Process-wide counters and latency percentiles behind GET /metrics; memory stays bounded."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def percentiles(values, points=(50, 90, 95, 99)) -> dict[str, float | None]:
    data = np.asarray(list(values), dtype=np.float64)
    out: dict[str, float | None] = {f"p{p}": (round(float(np.percentile(data, p)), 1) if data.size else None)
                                    for p in points}
    out["max"] = round(float(data.max()), 1) if data.size else None
    out["count"] = int(data.size)
    return out


def rss_bytes() -> int | None:
    """Resident set size of this process (Linux /proc; None elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass
class Metrics:
    """Counters since start-up; latency windows keep the most recent `window` values only."""

    window: int = 2000
    started: float = field(default_factory=time.time)
    active: int = 0
    connections: int = 0
    rejected: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    disconnects: int = 0
    audio_seconds: float = 0.0
    dropped_seconds: float = 0.0
    late_seconds: float = 0.0
    finals: int = 0
    partials: int = 0
    http_transcriptions: int = 0

    def __post_init__(self) -> None:
        self.final_latency_ms: deque[float] = deque(maxlen=self.window)
        self.decode_ms: deque[float] = deque(maxlen=self.window)
        self.queue_ms: deque[float] = deque(maxlen=self.window)

    def snapshot(self) -> dict:
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "connections": {"active": self.active, "total": self.connections, "rejected": dict(self.rejected),
                            "errors": dict(self.errors), "abrupt_disconnects": self.disconnects},
            "audio_seconds": round(self.audio_seconds, 2),
            "dropped_seconds": round(self.dropped_seconds, 2),
            "late_seconds": round(self.late_seconds, 2),
            "events": {"finals": self.finals, "partials": self.partials},
            "http_transcriptions": self.http_transcriptions,
            "final_latency_ms": percentiles(self.final_latency_ms),
            "decode_ms": percentiles(self.decode_ms),
            "queue_ms": percentiles(self.queue_ms),
            "rss_bytes": rss_bytes(),
        }
