"""Streaming front end on real audio: real webrtcvad, real moonshine-tiny, no mocks.

One replay (two_cities, beckett and a few Asterisk prompts with 1 s pauses) is streamed once per
module and checked for WER against offline transcription, committed-prefix stability, event order
and latency; silence, low noise and radio noise must produce no words.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

import numpy as np
import pytest

from edgeasr.audio import SAMPLE_RATE, prepare_audio
from edgeasr.engine import Engine
from edgeasr.metrics.wer import corpus_wer
from edgeasr.registry import fetch_package, find_file
from edgeasr.stream import (LineChanged, LineCompleted, LineStarted, SessionOptions, StreamingSession,
                            VADOptions, VADSegmenter, event_from_dict)
from edgeasr.stream.sources import MicSource, NoMicrophoneError, list_input_devices
from edgeasr.stream.vad import SpeechEnd, SpeechStart
from edgeasr.zoo.catalog import MOONSHINE_VOICE
from listen_support import interrupt_after_first_partial, listen_command, long_speech
from stream_support import run

BECKETT = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."
PAUSE = np.zeros(SAMPLE_RATE, np.float32)


def stream(engine: Engine, audio: np.ndarray, options: SessionOptions | None = None) -> list:
    return run(StreamingSession(engine, options), audio)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.load("moonshine-tiny")


@pytest.fixture(scope="module")
def pieces() -> list[tuple[np.ndarray, str]]:
    """Real speech with references: the moonshine-voice clips and, when built, four Asterisk prompts."""
    from edgeasr.data import is_built, load_manifest
    from edgeasr.data.moonshine import REFERENCES

    root = fetch_package(MOONSHINE_VOICE)
    items = [(prepare_audio(find_file(root, f"assets/{name}.wav")), REFERENCES[name])
             for name in ("two_cities", "beckett")]
    if is_built("asterisk-en"):
        prompts = [u for u in load_manifest("asterisk-en") if 3.0 <= u.seconds <= 6.0][:4]
        items += [(prepare_audio(u.audio), u.text) for u in prompts]
    return items


@dataclass
class Replay:
    events: list
    offline: list[str]
    references: list[str]
    options: SessionOptions


@pytest.fixture(scope="module")
def replay(engine: Engine, pieces) -> Replay:
    audio = np.concatenate([part for clip, _ in pieces for part in (clip, PAUSE)])
    # Every partial is decoded even on a busy machine, so the prefix checks always have partials to check;
    # one a second rather than the default 0.3 s keeps the re-decodes of growing lines within the CPU budget.
    options = SessionOptions(drop_late_partials=False, partial_interval=1.0)
    return Replay(stream(engine, audio, options), [engine.transcribe(clip).text for clip, _ in pieces],
                  [text for _, text in pieces], options)


def finals(events: list) -> list[LineCompleted]:
    return [e for e in events if isinstance(e, LineCompleted)]


def test_final_wer_close_to_offline(replay: Replay) -> None:
    reference = " ".join(replay.references)
    offline = corpus_wer([reference], [" ".join(replay.offline)])
    streamed = corpus_wer([reference], [" ".join(e.text for e in finals(replay.events))])
    print(f"offline {offline}\nstreamed {streamed}")
    # Lines are decoded without the context of the previous line, which costs a little.
    assert streamed.wer <= offline.wer + 0.05, (streamed, offline)


def test_committed_prefix_never_changes(replay: Replay) -> None:
    committed: dict[int, str] = {}
    for event in replay.events:
        assert event.text.startswith(event.committed), event
        assert event.committed.startswith(committed.get(event.line_id, "")), event
        committed[event.line_id] = event.committed
    assert any(committed.values()), "no partial ever committed a word"


def test_event_order(replay: Replay) -> None:
    open_line, next_id, last_end, last_text = None, 0, 0.0, None
    for event in replay.events:
        if isinstance(event, LineStarted):
            assert open_line is None and event.line_id == next_id and event.text
            assert event.start >= last_end
            open_line, next_id = event.line_id, next_id + 1
        else:
            assert event.line_id == open_line, event
            if isinstance(event, LineChanged):
                assert event.text != last_text
            else:
                open_line, last_end = None, event.end
        last_text = event.text
    assert open_line is None and next_id == len(finals(replay.events)) > 3


def test_latency_reported_per_final(replay: Replay) -> None:
    lines = finals(replay.events)
    options = replay.options
    for e in lines:
        # The VAD can only decide after its hangover, so latency is at least that; a line that reached
        # max_line_seconds is cut at the first pause of cut_pause_ms, and Smart Turn decides at its pause.
        floor = {"cut": options.cut_pause_ms, "smart": options.turn.pause_ms}.get(e.ended_by, options.vad.hangover_ms)
        assert e.latency_ms >= floor and e.finalize_ms >= 0 and e.decode_ms > 0, e
        assert e.cost is not None and e.cost.audio_seconds > 0
    print("latency ms:", sorted(round(e.latency_ms) for e in lines))


def test_events_serialize_to_json(replay: Replay) -> None:
    for event in replay.events:
        data = json.loads(json.dumps(event.to_dict()))
        assert data["type"] == type(event).__name__
        rebuilt = event_from_dict(data)
        assert (type(rebuilt), rebuilt.line_id, rebuilt.text, rebuilt.committed) == \
            (type(event), event.line_id, event.text, event.committed)


def test_long_speech_is_cut_on_a_pause(engine: Engine, pieces) -> None:
    first_half = pieces[0][0][: 22 * SAMPLE_RATE]  # two_cities up to "...the epoch of belief"
    lines = finals(stream(engine, first_half, SessionOptions(partials=False, max_line_seconds=3.0)))
    # Cut at the first pause after 3 s: a line only runs past it until the speaker breathes.
    assert len(lines) >= 5 and max(e.end - e.start for e in lines) < 6.0, lines
    assert "age of foolishness" in " ".join(e.text for e in lines).lower()


@pytest.mark.parametrize("kind", ["silence", "low white noise", "low brown noise"])
def test_no_words_on_silence_and_low_noise(engine: Engine, kind: str) -> None:
    rng = np.random.default_rng(0)
    n = 45 * SAMPLE_RATE
    if kind == "silence":
        audio = np.zeros(n, np.float32)
    elif kind == "low white noise":
        audio = 0.01 * rng.standard_normal(n)
    else:
        walk = np.cumsum(rng.standard_normal(n))
        walk -= np.convolve(walk, np.ones(400) / 400, "same")  # remove the drift, keep the rumble
        audio = 0.03 * walk / np.abs(walk).max()
    assert stream(engine, audio.astype(np.float32)) == []


def test_no_words_on_radio_noise() -> None:
    """codec2's david4 is 30 s of HF-radio noise (Whisper: P(no speech) 0.83-0.85 throughout).

    Run with whisper-tiny.en: Moonshine has no no-speech signal, and radio noise passes webrtcvad, so
    with Moonshine such noise can still turn into text (codec2 vk2tpm_004 decodes to "2021," and Thai).
    """
    from edgeasr.data import is_built, load_manifest

    if not is_built("codec2-calib"):
        pytest.skip("codec2-calib is not built (`edgeasr data build codec2-calib`)")
    (noise,) = [prepare_audio(u.audio) for u in load_manifest("codec2-calib") if u.id == "david4"]
    try:
        whisper = Engine.load("whisper-tiny.en")
    except Exception as exc:  # the Whisper zoo converter or its registry package may be unavailable
        pytest.skip(f"whisper-tiny.en unavailable: {exc}")
    assert stream(whisper, noise, SessionOptions(partials=False)) == []


def test_vad_is_independent_of_chunk_size(pieces) -> None:
    beckett = pieces[1][0]
    whole = VADSegmenter().push(np.concatenate([beckett, PAUSE]))
    chunked = VADSegmenter()
    parts = np.array_split(np.concatenate([beckett, PAUSE]), 997)
    assert [e for part in parts for e in chunked.push(part)] == whole
    starts = [e.start for e in whole if isinstance(e, SpeechStart)]
    ends = [e for e in whole if isinstance(e, SpeechEnd)]
    assert len(starts) == len(ends) >= 2 and starts[0] == 0  # pre-roll reaches back to the clip start
    assert all(e.decided_at - e.end >= VADOptions().hangover_ms * SAMPLE_RATE // 1000 for e in ends)


def test_mic_callback_counts_overflows_without_blocking() -> None:
    sounddevice = pytest.importorskip("sounddevice", exc_type=OSError)
    mic = MicSource(chunk_ms=100, queue_seconds=0.3)  # room for 3 chunks
    block = np.linspace(-0.5, 0.5, 1600, dtype=np.float32)[:, None]
    flags = sounddevice.CallbackFlags()
    flags.input_overflow = True
    for i in range(5):
        mic.callback(block, block.shape[0], None, flags if i == 0 else None)
    assert (mic.overflows, mic.input_overflows) == (2, 1)
    got = list(mic.chunks(timeout=0.01))  # the stream is not open: drains the queue and stops
    assert len(got) == 3 and all(np.array_equal(c, block[:, 0]) for c in got)


def test_mic_resamples_native_rate_to_16k() -> None:
    mic = MicSource(chunk_ms=100, queue_seconds=10)
    mic.sample_rate = 48000  # what open() reads from a 48 kHz USB microphone
    tone = np.sin(2 * np.pi * 440 * np.arange(48000) / 48000).astype(np.float32)[:, None]
    for block in np.array_split(tone, 10):
        mic.callback(block, block.shape[0], None, None)
    out = np.concatenate(list(mic.chunks(timeout=0.01)))
    assert abs(out.size - SAMPLE_RATE) < 800  # the streaming resampler holds back a short tail


def test_no_microphone_is_a_clear_error() -> None:
    try:
        devices = list_input_devices()
    except NoMicrophoneError:
        devices = []  # PortAudio itself is missing: the same error path
    if devices:
        pytest.skip("this machine has an input device")
    with pytest.raises(NoMicrophoneError, match="--file"):
        MicSource().open()
    done = subprocess.run(listen_command(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "error:" in done.stderr and "--file" in done.stderr


def test_listen_cli_file_json_end_to_end() -> None:
    beckett = find_file(fetch_package(MOONSHINE_VOICE), "assets/beckett.wav")
    done = subprocess.run(listen_command() + ["--file", str(beckett), "--json", "--fast"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    lines = [e for e in events if e["type"] == "LineCompleted"]
    assert lines and all(e["latency_ms"] > 0 for e in lines)
    assert corpus_wer([BECKETT], [" ".join(e["text"] for e in lines)]).wer < 0.5


def test_ctrl_c_completes_the_open_line_and_exits_0() -> None:
    partial, after, returncode, stderr = interrupt_after_first_partial(["--file", long_speech()])
    assert returncode == 0, stderr
    assert "completing the open line" in stderr
    completed = [e for e in after if e["type"] == "LineCompleted"]
    # The interrupted line is finished from the audio heard so far, not dropped, and nothing more is read.
    assert completed and completed[-1]["line_id"] == partial["line_id"]
    assert completed[-1]["text"].strip() and completed[-1]["end"] < 40.0
