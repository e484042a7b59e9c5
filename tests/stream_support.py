"""Helpers shared by the streaming tests (test_stream, test_stream_events, test_turn): silence, and audio
fed to a `StreamingSession` the way the front ends feed it (100 ms chunks, then `finish()`)."""

from __future__ import annotations

import numpy as np

from edgeasr.audio import SAMPLE_RATE
from edgeasr.stream import StreamingSession
from edgeasr.stream.sources import ArraySource


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SAMPLE_RATE)), np.float32)


def feed(session: StreamingSession, audio: np.ndarray) -> tuple[list, list]:
    """(events returned by `accept` over the audio in 100 ms chunks, events returned by `finish`)."""
    return [e for chunk in ArraySource(audio) for e in session.accept(chunk)], session.finish()


def run(session: StreamingSession, audio: np.ndarray) -> list:
    """Every event of `feed`, in order."""
    during, at_finish = feed(session, audio)
    return during + at_finish
