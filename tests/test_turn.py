"""End of turn (Smart Turn v3.2 on webrtcvad) and finals before partials, on real audio and real models.

Nothing here is timed: where a line ended is read in audio time (`ended_by`, `end`, the decision point
`latency_ms - finalize_ms`), and the server's order guarantee from the order events arrive in.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import numpy as np
import pytest

from edgeasr.audio import SAMPLE_RATE, prepare_audio
from edgeasr.engine import Engine
from edgeasr.metrics.wer import utterance_wer
from edgeasr.registry import fetch_package, find_file
from edgeasr.stream import LineCompleted, SessionOptions, StreamingSession
from edgeasr.stream.sources import ArraySource
from edgeasr.stream.turn import TurnOptions, load_turn_model, turn_features
from edgeasr.zoo.catalog import MOONSHINE_VOICE
from server.scheduler import FINAL, PARTIAL, DecodeScheduler


def _silence(ms: int) -> np.ndarray:
    return np.zeros(SAMPLE_RATE * ms // 1000, np.float32)


def _stream(engine: Engine, audio: np.ndarray, options: SessionOptions) -> tuple[list, list]:
    """(events from accept, events from finish)."""
    session = StreamingSession(engine, options)
    return [e for chunk in ArraySource(audio) for e in session.accept(chunk)], session.finish()


def _finals(events: list) -> list[LineCompleted]:
    return [e for e in events if isinstance(e, LineCompleted)]


# -- no model needed -------------------------------------------------------------------------------

def test_turn_features_shape_and_front_padding() -> None:
    rng = np.random.default_rng(0)
    short = (0.1 * rng.standard_normal(3 * SAMPLE_RATE)).astype(np.float32)
    features = turn_features(short)
    assert features.shape == (1, 80, 800) and features.dtype == np.float32
    # Audio sits at the end of the 8 s window: the first 5 s are padding (flat), the last 3 s are not.
    assert features[0, :, :400].std() < 1e-3 < features[0, :, 600:].std()
    long = np.concatenate([rng.standard_normal(20 * SAMPLE_RATE).astype(np.float32), short])
    assert np.allclose(turn_features(long)[0, :, -200:], turn_features(long[-8 * SAMPLE_RATE:])[0, :, -200:])


def test_turn_options_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="end of turn"):
        TurnOptions(mode="semantic")
    with pytest.raises(ValueError, match="threshold"):
        TurnOptions(threshold=1.5)


def test_scheduler_runs_finals_before_queued_partials_one_job_per_key() -> None:
    async def main() -> list:
        scheduler = DecodeScheduler(workers=1)
        gate, running = threading.Event(), {}

        def job(name: str, key: str) -> str:
            assert not running.get(key), f"two jobs of {key} at once"
            running[key] = True
            if name == "blocker":
                gate.wait(10)
            running[key] = False
            return name

        blocker = asyncio.ensure_future(scheduler.run(job, "blocker", "a", priority=PARTIAL, key="a"))
        while not scheduler.started:
            await asyncio.sleep(0.01)
        queued = [asyncio.ensure_future(scheduler.run(job, f"partial-{k}", k, priority=PARTIAL, key=k))
                  for k in ("b", "c")]
        queued.append(asyncio.ensure_future(scheduler.run(job, "final-a", "a", priority=FINAL, key="a")))
        queued.append(asyncio.ensure_future(scheduler.run(job, "final-d", "d", priority=FINAL, key="d")))
        while scheduler.waiting < 4:
            await asyncio.sleep(0.01)
        assert scheduler.backoff() == 5.0
        gate.set()
        await asyncio.gather(blocker, *queued)
        scheduler.close()
        return scheduler.started

    started = asyncio.run(main())
    assert started == [(PARTIAL, "a"), (FINAL, "a"), (FINAL, "d"), (PARTIAL, "b"), (PARTIAL, "c")]


# -- real audio, real models -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.load("moonshine-tiny")


@pytest.fixture(scope="module")
def beckett() -> np.ndarray:
    return prepare_audio(find_file(fetch_package(MOONSHINE_VOICE), "assets/beckett.wav"))


@pytest.fixture(scope="module")
def smart() -> TurnOptions:
    options = TurnOptions(mode="smart")
    assert load_turn_model(options) is not None, "Smart Turn did not load (see the warning above)"
    return options


@pytest.mark.slow
def test_complete_sentence_ends_before_the_hangover(engine: Engine, beckett: np.ndarray, smart: TurnOptions) -> None:
    """"... Fail again. Fail better." then 300 ms of silence: the hangover (600 ms) is never reached, yet the
    last line completes while streaming, decided by Smart Turn well before the hangover would have."""
    options = SessionOptions(turn=smart)
    during, at_finish = _stream(engine, np.concatenate([beckett, _silence(300)]), options)
    lines = _finals(during)
    assert lines and not _finals(at_finish), (during, at_finish)
    last = lines[-1]
    assert last.ended_by == "smart" and last.turn_probability >= smart.threshold, last
    assert "better" in last.text.lower(), last
    decided_after_ms = last.latency_ms - last.finalize_ms  # audio time: last voiced frame → decision
    assert smart.pause_ms <= decided_after_ms < options.vad.hangover_ms, last
    assert utterance_wer("ever tried ever failed no matter try again fail again fail better",
                         " ".join(e.text for e in lines)).wer <= 0.3


@pytest.mark.slow
def test_mid_sentence_pause_stays_one_line(engine: Engine, smart: TurnOptions) -> None:
    """An Asterisk prompt with 400 ms of silence inserted between two words: Smart Turn hears an unfinished
    sentence at the pause, so the line stays open and the sentence ends as one line."""
    from edgeasr.bench.turn import _gap_split
    from edgeasr.data import is_built, load_manifest

    if not is_built("asterisk-en"):
        pytest.skip("asterisk-en is not built (`edgeasr data build asterisk-en`)")
    (prompt,) = [u for u in load_manifest("asterisk-en") if u.id == "conf-invalidpin"]
    clip = prepare_audio(prompt.audio)
    split = _gap_split(clip)
    audio = np.concatenate([_silence(300), clip[:split], _silence(400), clip[split:], _silence(1000)])
    during, at_finish = _stream(engine, audio, SessionOptions(turn=smart))
    lines = _finals(during + at_finish)
    assert len(lines) == 1, lines
    assert lines[0].turn_probability is not None  # the mid-sentence pause was scored, and judged unfinished
    assert utterance_wer(prompt.text, lines[0].text).wer <= 0.2, lines


@pytest.mark.slow
def test_missing_model_falls_back_to_the_hangover(engine: Engine, beckett: np.ndarray, tmp_path, caplog) -> None:
    missing = TurnOptions(mode="smart", model_path=str(tmp_path / "no-such-smart-turn.onnx"))
    with caplog.at_level(logging.WARNING, logger="edgeasr.stream.turn"):
        options = SessionOptions(turn=missing, partials=False)
        during, at_finish = _stream(engine, np.concatenate([beckett, _silence(1000)]), options)
        StreamingSession(engine, options)  # a second session: no second warning
    warnings = [r for r in caplog.records if "Smart Turn unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "hangover" in warnings[0].getMessage()
    lines = _finals(during + at_finish)
    assert lines and all(e.ended_by == "hangover" and e.turn_probability is None for e in lines), lines
    assert all(e.latency_ms - e.finalize_ms >= options.vad.hangover_ms - 1 for e in lines)  # float rounding


@pytest.mark.slow
def test_server_completes_a_line_before_later_partials_of_another_session(beckett: np.ndarray) -> None:
    """Two clients on one decode worker: A says a sentence and stops, B talks on with partials. A's final
    is never sent later than a partial of B whose audio arrived after A's end-of-speech was decidable."""
    pytest.importorskip("fastapi")
    pytest.importorskip("websockets")
    import socket

    import uvicorn
    from websockets.asyncio.client import connect

    from server.app import STREAM_PATH, create_app
    from server.options import ServerOptions

    options = ServerOptions(host="127.0.0.1", port=0, token="t", models=("moonshine-tiny",), lazy_zoo=False,
                            workers=1, max_queue_seconds=30.0, log_level="warning")
    app = create_app(options)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 180
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.started
    url = f"ws://127.0.0.1:{sock.getsockname()[1]}{STREAM_PATH}"
    chunk = SAMPLE_RATE // 10
    speaker_a = np.concatenate([beckett[: 3 * SAMPLE_RATE], _silence(2500)])  # "Ever tried. Ever failed."
    speaker_b = np.concatenate([beckett, beckett])

    async def client(audio: np.ndarray, sent: list, received: list, end_of_turn: str) -> None:
        import json

        async with connect(url, additional_headers={"Authorization": "Bearer t"}) as ws:
            await ws.send(json.dumps({"sample_rate": SAMPLE_RATE, "encoding": "float32", "end_of_turn": end_of_turn}))
            assert json.loads(await ws.recv())["type"] == "ready"

            async def reader() -> None:
                async for message in ws:
                    event = json.loads(message)
                    received.append((time.perf_counter(), event))
                    if event["type"] == "summary":
                        return

            task = asyncio.create_task(reader())
            for i in range(0, audio.size, chunk):  # real time, as a microphone would send it
                await ws.send(audio[i:i + chunk].astype("<f4").tobytes())
                sent.append((time.perf_counter(), (i + chunk) / SAMPLE_RATE))
                await asyncio.sleep(0.1)
            await ws.send(json.dumps({"type": "end"}))
            await asyncio.wait_for(task, 120)

    async def main():
        a_sent, a_got, b_sent, b_got = [], [], [], []
        await asyncio.gather(client(speaker_a, a_sent, a_got, "vad"), client(speaker_b, b_sent, b_got, "vad"))
        return a_sent, a_got, b_sent, b_got

    try:
        a_sent, a_got, b_sent, b_got = asyncio.run(main())
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
    a_finals = [(t, e) for t, e in a_got if e["type"] == "LineCompleted"]
    b_partials = [(t, e) for t, e in b_got if e["type"] in ("LineStarted", "LineChanged")]
    assert a_finals and b_partials
    hangover = SessionOptions().vad.hangover_ms / 1000
    pad = SessionOptions().final_pad_ms / 1000
    checked = 0
    for got_at, final in a_finals:
        # A's end of speech was decidable once the audio up to its end plus the hangover had been sent.
        decidable = final["end"] - pad + hangover + 0.1
        sent_at = next(t for t, upto in a_sent if upto >= decidable)
        later = [t for t, e in b_partials if next(s for s, upto in b_sent if upto >= e["end"]) > sent_at]
        assert all(t >= got_at for t in later), (final, later, got_at)
        checked += len(later)
    assert checked > 0, "no partial of B came after A's final: the test exercised nothing"


def test_text_gate_reads_sentence_punctuation() -> None:
    from edgeasr.stream.turn import closes_sentence

    assert closes_sentence("Please enter a new extension followed by pound.")
    assert closes_sentence('Is that "done?"  ')
    assert not closes_sentence("Please enter a new extension,")
    assert not closes_sentence("the leader has left")
    assert not closes_sentence("")
