"""StreamingSession's event order on a stub backend: the session's own logic (VAD, partials, commits,
finals) without a model. The stub "hears" one word per 0.4 s of audio, so hypotheses grow as a line grows.

The audio is synthetic voiced speech (a glottal pulse train through three vowel formants, four syllables
a second) that webrtcvad accepts as speech, separated by true silence.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeasr.audio import SAMPLE_RATE
from edgeasr.decoding import DecodeResult
from edgeasr.engine import Engine
from edgeasr.metrics.layers import LayerInfo, ModelDims
from edgeasr.stream.events import LineChanged, LineCompleted, LineStarted, event_from_dict
from edgeasr.stream.session import SessionOptions, StreamingSession
from stream_support import run, silence

WORD_SECONDS = 0.4


class StubBackend:
    """The `edgeasr.engine.Backend` protocol with a deterministic "decoder": word i for each 0.4 s."""

    kind, family, max_segment_seconds, source = "stub", "moonshine", 30.0, "stub"

    def __init__(self) -> None:
        self.runs = 0

    def run(self, audio: np.ndarray) -> tuple[DecodeResult, float, float]:
        self.runs += 1
        n_words = max(1, int(audio.size / SAMPLE_RATE / WORD_SECONDS))
        return DecodeResult(list(range(n_words)), -0.1, None, False, n_words + 1), 0.001, 0.001

    def detokenize(self, tokens: list[int]) -> str:
        return " ".join(f"word{t}" for t in tokens)

    def describe(self) -> dict:
        return {"backend": self.kind}

    def layer_infos(self) -> list[LayerInfo]:
        return [LayerInfo("model.encoder.layers.0.fc1", "linear", 8, 8, weight_bytes=128, params=64),
                LayerInfo("model.decoder.layers.0.fc1", "linear", 8, 8, weight_bytes=128, params=64)]

    def model_dims(self) -> ModelDims:
        return ModelDims("moonshine", 1, 1, 16000.0, None)


def voiced(seconds: float, f0: float = 120.0, seed: int = 0) -> np.ndarray:
    """Vowel-like audio: harmonics of f0 weighted by formant resonances at 700, 1200 and 2600 Hz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = f0 * (1 + 0.03 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    out = np.zeros_like(t)
    for k in range(1, int(3800 / f0)):
        freq = k * f0
        gain = sum(1 / (1 + ((freq - f) / bw) ** 2) for f, bw in ((700, 110), (1200, 130), (2600, 200)))
        out += gain / k * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    envelope = 0.25 + 0.75 * np.sin(np.pi * 4 * t) ** 2  # four syllables a second
    return (0.3 * out * envelope / np.abs(out).max()).astype(np.float32)


@pytest.fixture(scope="module")
def stream() -> np.ndarray:
    # three utterances (2.4, 1.6 and 3.2 s) between pauses longer than the VAD hangover
    return np.concatenate([silence(0.5), voiced(2.4, 120, 1), silence(1.2), voiced(1.6, 180, 2), silence(1.2),
                           voiced(3.2, 140, 3), silence(1.0)])


@pytest.fixture(scope="module")
def events(stream) -> list:
    options = SessionOptions(drop_late_partials=False, release_heap=False)
    return run(StreamingSession(Engine(StubBackend(), "stub"), options), stream)


def test_one_line_per_utterance(events):
    finals = [e for e in events if isinstance(e, LineCompleted)]
    assert [e.line_id for e in finals] == [0, 1, 2]
    # the stub's word count follows each line's audio: about 2.4, 1.6 and 3.2 s of speech
    assert [len(e.text.split()) for e in finals] == [pytest.approx(n, abs=1) for n in (6, 4, 8)]


def test_event_order(events):
    open_line, next_id, last_end, last_text = None, 0, 0.0, None
    for event in events:
        if isinstance(event, LineStarted):
            assert open_line is None and event.line_id == next_id and event.text and event.start >= last_end
            open_line, next_id = event.line_id, next_id + 1
        else:
            assert event.line_id == open_line, event
            if isinstance(event, LineChanged):
                assert event.text != last_text
            else:
                open_line, last_end = None, event.end
        last_text = event.text
    assert open_line is None


def test_committed_prefix_only_grows(events):
    committed: dict[int, str] = {}
    for event in events:
        assert event.text.startswith(event.committed), event
        assert event.committed.startswith(committed.get(event.line_id, "")), event
        committed[event.line_id] = event.committed
    assert any(committed.values()), "no partial ever committed a word"


def test_events_serialize_to_json(events):
    for event in events:
        rebuilt = event_from_dict(json.loads(json.dumps(event.to_dict())))
        assert (type(rebuilt), rebuilt.line_id, rebuilt.text, rebuilt.committed) == \
            (type(event), event.line_id, event.text, event.committed)


def test_silence_emits_nothing_and_decodes_nothing():
    backend = StubBackend()
    assert run(StreamingSession(Engine(backend, "stub")), silence(3.0)) == [] and backend.runs == 0


def test_finish_completes_the_open_line_and_the_session_goes_on(stream):
    session = StreamingSession(Engine(StubBackend(), "stub"), SessionOptions(release_heap=False))
    first = run(session, voiced(2.0, 150, 4))  # speech up to the end: finish() must complete it
    assert isinstance(first[-1], LineCompleted) and first[-1].ended_by == "finish"
    again = run(session, np.concatenate([silence(0.3), voiced(1.6, 150, 5), silence(1.0)]))
    assert [e.line_id for e in again if isinstance(e, LineCompleted)] == [1]


def test_finals_only_without_partials(stream):
    options = SessionOptions(partials=False, release_heap=False)
    events = run(StreamingSession(Engine(StubBackend(), "stub"), options), stream)
    assert {type(e) for e in events} == {LineStarted, LineCompleted}


def test_no_partial_once_a_pause_begins(events):
    """Partials decode only while the speaker is voiced (one started in a pause would delay the end decision):
    no partial of a line reaches past its last voiced frame, where the final's `final_pad_ms` begins."""
    pad = SessionOptions().final_pad_ms / 1000
    finals = {e.line_id: e for e in events if isinstance(e, LineCompleted)}
    partials = [e for e in events if isinstance(e, (LineStarted, LineChanged))]
    assert partials and all(e.end <= finals[e.line_id].end - pad + 1e-6 for e in partials), partials
