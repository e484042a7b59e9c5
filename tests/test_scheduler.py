"""Finals before partials (edgeasr/stream/scheduler.py), for the server and the demo that share it.

Nothing here is timed: the order guarantees are read from the order jobs started and events arrived in.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from edgeasr.audio import SAMPLE_RATE
from edgeasr.engine import Engine
from edgeasr.stream import LineCompleted, SessionOptions
from edgeasr.stream.scheduler import FINAL, PARTIAL, DecodeScheduler
from edgeasr.stream.turn import TurnOptions

MODEL = "moonshine-tiny"


def _silence(ms: int) -> np.ndarray:
    return np.zeros(SAMPLE_RATE * ms // 1000, np.float32)


# -- no model needed -------------------------------------------------------------------------------

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


def test_one_worker_stays_free_of_partials_for_finals() -> None:
    """Two workers: while one runs a partial, another session's queued partial waits and a final takes the
    free worker; the partial starts once the first one is done."""
    async def main() -> list:
        scheduler = DecodeScheduler(workers=2)
        gate, final_done = threading.Event(), threading.Event()
        blocker = asyncio.ensure_future(scheduler.run(gate.wait, 10, priority=PARTIAL, key="a"))
        while not scheduler.started:
            await asyncio.sleep(0.01)
        partial = asyncio.ensure_future(scheduler.run(lambda: "partial-b", priority=PARTIAL, key="b"))
        final = asyncio.ensure_future(scheduler.run(final_done.set, priority=FINAL, key="c"))
        await final
        assert scheduler.started == [(PARTIAL, "a"), (FINAL, "c")] and scheduler.waiting == 1
        gate.set()
        assert await partial == "partial-b"
        await blocker
        scheduler.close()
        return scheduler.started

    assert asyncio.run(main()) == [(PARTIAL, "a"), (FINAL, "c"), (PARTIAL, "b")]


def test_a_cancelled_job_is_skipped_and_a_blocking_call_returns_its_result() -> None:
    scheduler = DecodeScheduler(workers=1)
    gate, ran = threading.Event(), []
    blocker = scheduler.submit(gate.wait, 10, key="a")
    skipped = scheduler.submit(ran.append, "skipped", key="b")
    assert skipped.cancel()
    gate.set()
    assert blocker.result() is True
    assert scheduler.call(lambda x: x * 2, 21, priority=PARTIAL) == 42
    with pytest.raises(ZeroDivisionError):
        scheduler.call(lambda: 1 / 0)
    scheduler.close()
    assert ran == [] and [key for _, key in scheduler.started] == ["a", None, None]


# -- real audio, real models -----------------------------------------------------------------------

@pytest.mark.slow
def test_demo_sessions_accept_audio_before_a_partial_queued_earlier(speech_clips) -> None:
    """Two Live-tab sessions on the demo's one decode worker. B's partial is queued; then A's audio that ends
    A's line arrives: A's accept (and its final) runs first, B's partial after it, and it still decodes."""
    from demo.engines import FP, EngineKey
    from demo.streaming import Transcriber, decode_scheduler

    engine = Engine.load(MODEL)
    key, options = EngineKey.of(MODEL, FP, 16), SessionOptions(turn=TurnOptions(mode="vad"))
    a, b = Transcriber.start(key, engine, options), Transcriber.start(key, engine, options)
    scheduler, beckett, applied = decode_scheduler(), speech_clips["beckett"], []
    for name, side in (("a", a), ("b", b)):
        side.runner.apply = lambda events, name=name, apply=side.runner.apply: (
            applied.extend((name, type(e).__name__) for e in events), apply(events))

    # A: "Ever tried. Ever failed." and 400 ms of silence (the 600 ms hangover has not ended it yet).
    a.feed(SAMPLE_RATE, np.concatenate([beckett[:int(2.8 * SAMPLE_RATE)], _silence(400)]))
    scheduler.call(lambda: None, priority=PARTIAL)  # runs after every partial queued before it
    assert not a.finals

    def hold(name: str) -> threading.Event:
        """Queue a job that keeps the worker until the returned event is set."""
        gate = threading.Event()
        scheduler.submit(gate.wait, 30, key=name)
        return gate

    def feed_in_thread(side: Transcriber, audio: np.ndarray) -> threading.Thread:
        thread = threading.Thread(target=side.feed, args=(SAMPLE_RATE, audio))
        thread.start()
        return thread

    def until(condition) -> None:
        deadline = time.monotonic() + 120  # a bound on a hang, not a timing check
        while not condition():
            assert time.monotonic() < deadline, scheduler.started[-5:]
            time.sleep(0.01)

    first = hold("first gate")
    until(lambda: scheduler.waiting == 0)  # the worker holds at the first gate
    feeding_b = feed_in_thread(b, beckett[:int(2.4 * SAMPLE_RATE)])  # ends mid-word: B's first partial is due
    until(lambda: scheduler.waiting == 1)
    second = hold("second gate")  # queued behind B's accept, ahead of the partial that accept queues
    first.set()
    feeding_b.join()
    until(lambda: scheduler.waiting == 1)  # the worker holds at the second gate; B's partial waits
    decodes, applied[:] = b.session.partial_decodes, []
    feeding_a = feed_in_thread(a, _silence(1000))  # ends A's line by the hangover
    until(lambda: scheduler.waiting == 2)
    second.set()
    feeding_a.join()
    scheduler.call(lambda: None, priority=PARTIAL)

    assert scheduler.started[-3:] == [(FINAL, a.runner.key), (PARTIAL, b.runner.key), (PARTIAL, None)]
    a_events = [event for name, event in applied if name == "a"]
    assert applied[:len(a_events)] == [("a", event) for event in a_events], applied  # all of A's, then B's
    assert a_events[-1] == LineCompleted.__name__ and a.finals and "failed" in a.text.lower(), applied
    assert b.session.partial_decodes == decodes + 1 and b.partial, applied
    a.finish()
    b.finish()


@pytest.mark.slow
def test_server_completes_a_line_before_later_partials_of_another_session(speech_clips) -> None:
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
    beckett = speech_clips["beckett"]
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
