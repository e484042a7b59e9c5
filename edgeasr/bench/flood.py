"""Bounded flood test for `edgeasr bench server`: clients send audio as fast as the socket takes it.

For each overflow mode ("drop", "block") a few clients on loopback each send a fixed amount of real
speech with no pacing and a small queue bound, and the run is cut at a wall-clock limit. Reported per
mode: audio seconds sent, received and decoded by the server (its summary), dropped (summary and the
sum of `dropped` events, which must agree), lines, wall time and whether every stream got its summary.
"drop" must account for every second (sent = received + dropped); "block" must drop nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlparse

import numpy as np

from edgeasr.audio import SAMPLE_RATE
from edgeasr.server.options import is_loopback

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FloodOptions:
    """How hard and how long the flood runs."""

    seconds: float = 60.0
    """Audio each client sends (real speech, looped): the count limit."""
    clients: int = 3
    """Concurrent flooding clients per mode."""
    max_queue_seconds: float = 1.0
    """Queue bound the clients ask for (small, so "drop" has to drop)."""
    chunk_ms: int = 100
    """Audio per frame."""
    time_limit: float = 600.0
    """Wall-clock seconds one mode may take; beyond it the streams are cut and reported incomplete."""
    modes: tuple[str, ...] = ("drop", "block")
    """Overflow modes tried."""


async def _client(url: str, token: str, audio: np.ndarray, mode: str, options: FloodOptions) -> dict:
    from edgeasr.client import ClientOptions, IncompleteStreamError, stream_async

    client = ClientOptions(token=token, partials=False, overflow=mode, max_queue_seconds=options.max_queue_seconds,
                           chunk_ms=options.chunk_ms, realtime=False, raise_on_error=False)
    row = {"sent_seconds": round(audio.size / SAMPLE_RATE, 3), "received_seconds": None, "dropped_seconds": None,
           "dropped_event_seconds": 0.0, "lines": 0, "complete": False, "error": None}
    try:
        async for event in stream_async(url, audio, SAMPLE_RATE, client):
            kind = event["type"]
            if kind == "dropped":
                row["dropped_event_seconds"] += event["seconds"]
            elif kind == "error":
                row["error"] = event["code"]
            elif kind == "summary":
                row.update(received_seconds=event["audio_seconds"], dropped_seconds=event["dropped_seconds"],
                           lines=event["lines"], complete=True)
    except IncompleteStreamError as exc:
        row["error"] = str(exc)
    row["dropped_event_seconds"] = round(row["dropped_event_seconds"], 3)
    return row


async def _mode(url: str, token: str, audio: np.ndarray, mode: str, options: FloodOptions) -> dict:
    start = time.perf_counter()
    tasks = [asyncio.create_task(_client(url, token, audio, mode, options)) for _ in range(options.clients)]
    done, pending = await asyncio.wait(tasks, timeout=options.time_limit)
    for task in pending:
        task.cancel()
    rows = [task.result() for task in done]
    total = lambda key: round(sum(r[key] or 0.0 for r in rows), 3)  # noqa: E731
    return {"mode": mode, "clients": options.clients, "wall_seconds": round(time.perf_counter() - start, 1),
            "sent_seconds": round(options.clients * audio.size / SAMPLE_RATE, 3),
            "received_seconds": total("received_seconds"), "dropped_seconds": total("dropped_seconds"),
            "dropped_event_seconds": total("dropped_event_seconds"), "lines": sum(r["lines"] for r in rows),
            "complete": sum(r["complete"] for r in rows), "cut_at_time_limit": len(pending),
            "errors": [r["error"] for r in rows if r["error"]]}


def run(url: str, token: str, speech: np.ndarray, options: FloodOptions = FloodOptions()) -> dict:
    """Flood the server at `url` (loopback only) in each mode; returns the per-mode rows."""
    host = urlparse(url).hostname or ""
    if not is_loopback(host):
        raise ValueError(f"the flood test runs on loopback only, not {host!r}")
    audio = np.resize(speech, int(options.seconds * SAMPLE_RATE)).astype(np.float32)
    modes = []
    for mode in options.modes:
        modes.append(asyncio.run(_mode(url, token, audio, mode, options)))
        log.info("flood %s: %s", mode, modes[-1])
    return {"options": asdict(options), "modes": modes}


def markdown(report: dict) -> list[str]:
    """The flood section of server_bench.md."""
    o = report["options"]
    lines = ["", "## Flood: clients sending as fast as the socket takes audio", "",
             f"{o['clients']} clients per mode, {o['seconds']:g} s of speech each in {o['chunk_ms']} ms frames, "
             f"queue bound {o['max_queue_seconds']:g} s, limit {o['time_limit']:g} s per mode, loopback. "
             "Received = decoded by the server (its summary); dropped events must add up to the summary's dropped.",
             "", "| mode | sent s | received s | dropped s | dropped events s | lines | complete | wall s | errors |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in report["modes"]:
        lines.append(f"| {m['mode']} | {m['sent_seconds']} | {m['received_seconds']} | {m['dropped_seconds']} | "
                     f"{m['dropped_event_seconds']} | {m['lines']} | {m['complete']}/{m['clients']} | "
                     f"{m['wall_seconds']} | {', '.join(m['errors']) or 'none'} |")
    return lines
