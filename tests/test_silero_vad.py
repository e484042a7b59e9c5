"""Silero VAD as a second opinion on webrtcvad (`VADOptions(kind="silero")`), on real audio and a real model.

Nothing here is timed. The Silero model comes from the pinned pipecat-ai wheel (a registry download on
first use), so these tests are in the slow tier.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeasr.audio import SAMPLE_RATE, prepare_audio
from edgeasr.engine import Engine
from edgeasr.metrics.wer import utterance_wer
from edgeasr.stream import LineCompleted, SessionOptions, StreamingSession
from edgeasr.stream.sources import ArraySource
from edgeasr.stream.vad import SpeechStart, VADOptions, VADSegmenter

SILERO = VADOptions(kind="silero")


def _segments(audio: np.ndarray, options: VADOptions, chunk: int) -> list:
    vad = VADSegmenter(options)
    return [event for start in range(0, audio.size, chunk) for event in vad.push(audio[start:start + chunk])]


@pytest.mark.slow
def test_radio_static_opens_no_line_with_silero() -> None:
    """codec2's vk2tpm_004 (35 s of HF-radio static): webrtcvad calls it speech, webrtcvad + Silero does not."""
    from edgeasr.data import is_built, load_manifest

    if not is_built("codec2-calib"):
        pytest.skip("codec2-calib is not built (`edgeasr data build codec2-calib`)")
    (static,) = [prepare_audio(u.audio) for u in load_manifest("codec2-calib") if u.id == "vk2tpm_004"]
    assert any(isinstance(e, SpeechStart) for e in _segments(static, VADOptions(), SAMPLE_RATE))
    assert _segments(static, SILERO, SAMPLE_RATE) == []


@pytest.mark.slow
def test_speech_still_transcribes_with_silero_whatever_the_chunks(speech_clips) -> None:
    beckett = np.concatenate([speech_clips["beckett"], np.zeros(SAMPLE_RATE, np.float32)])
    segments = _segments(beckett, SILERO, SAMPLE_RATE // 10)
    assert segments and segments == _segments(beckett, SILERO, 7 * SAMPLE_RATE + 13)
    session = StreamingSession(Engine.load("moonshine-tiny"), SessionOptions(vad=SILERO, partials=False))
    events = [e for chunk in ArraySource(beckett) for e in session.accept(chunk)] + session.finish()
    text = " ".join(e.text for e in events if isinstance(e, LineCompleted))
    assert utterance_wer("ever tried ever failed no matter try again fail again fail better", text).wer <= 0.2, text
