"""Stream audio to an `edgeasr-server` and read its events (protocol: docs/protocol.md).

    from edgeasr.client import stream
    for event in stream("ws://127.0.0.1:8765/v1/stream", "talk.wav"):
        print(event["type"], event.get("text"))

`stream` takes a file path (sent at real-time speed unless `realtime=False`), a float32 array, or any
iterable of float32 chunks (e.g. a microphone source) and yields the server's event dicts, the final
`summary` included. Needs the `websockets` package (`pip install edgeasr[server]`).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Iterable, Iterator

import numpy as np

from edgeasr.audio import LIVE_CHUNK_MS
from edgeasr.errors import EdgeASRError
from edgeasr.protocol import ACK, END, ERROR, READY, SUMMARY, TOKEN_ENV, StreamConfig, StreamRequest, dumps, encode_frame

Source = str | Path | np.ndarray | Iterable[np.ndarray]


class ServerError(EdgeASRError):
    """The server rejected or ended the stream with an error event (see `code`)."""

    def __init__(self, event: dict) -> None:
        super().__init__(f"server error {event.get('code')} ({event.get('close_code')}): {event.get('message')}")
        self.code = event.get("code")
        self.event = event


class IncompleteStreamError(EdgeASRError):
    """The stream ended without the server's `summary`: the transcript may be missing audio."""


@dataclass(frozen=True, kw_only=True)
class ClientOptions(StreamRequest):
    """What to ask the server for (the `StreamRequest` fields: model, partials, overflow, end_of_turn, ...,
    sent in the config message) and how to send the audio (the fields below)."""

    token: str | None = field(default_factory=lambda: os.environ.get(TOKEN_ENV) or None)
    """Server token; default $EDGEASR_SERVER_TOKEN."""
    chunk_ms: int = LIVE_CHUNK_MS
    """Audio per frame when the source is a file or an array (one VAD frame: the server's end-of-turn
    decision waits for no more audio than that)."""
    realtime: bool = True
    """Pace file and array sources at real-time speed (as a microphone would); False sends at once."""
    send_ahead_seconds: float = 5.0
    """Block mode: most audio sent beyond what the server acknowledged (`ack`), so keepalive pings never
    wait behind minutes of audio in socket buffers."""
    open_timeout: float = 30.0
    """Seconds to connect and get the `ready` event (includes a model load on the server)."""
    final_timeout: float = 120.0
    """Seconds to wait for the next event once the audio is sent (the summary comes last)."""
    raise_on_error: bool = True
    """Raise ServerError after yielding an error event (False: yield it and read on to the summary)."""


def _chunks_of(source: Source, sample_rate: int | None, chunk_ms: int) -> tuple[int, Iterable[np.ndarray], bool]:
    """(rate, chunks, paceable): files and arrays are cut into frames; other iterables pass through."""
    if isinstance(source, (str, Path)):
        from edgeasr.audio import load_audio

        audio, rate = load_audio(source)
        source, sample_rate = audio.mean(axis=1).astype(np.float32), rate
    if sample_rate is None:
        raise ValueError("sample_rate is required for arrays and chunk iterables")
    if isinstance(source, np.ndarray):
        step = max(1, sample_rate * chunk_ms // 1000)
        return sample_rate, [source[i:i + step] for i in range(0, source.size, step)], True
    return sample_rate, source, False


def _closed(exc: Exception, when: str) -> IncompleteStreamError:
    frame = getattr(exc, "rcvd", None) or getattr(exc, "sent", None)
    how = f"close code {frame.code}{f' ({frame.reason})' if frame.reason else ''}" if frame else "no close frame"
    return IncompleteStreamError(f"the connection closed {when} ({how}) before the server's summary: "
                                 f"the transcript is incomplete")


class _Progress:
    """Audio seconds sent and acknowledged (block mode), shared by the sender and the reader."""

    def __init__(self) -> None:
        self.sent = self.acked = 0.0
        self.changed = asyncio.Event()

    def ack(self, seconds: float) -> None:
        self.acked = max(self.acked, seconds)
        self.changed.set()


async def stream_async(url: str, source: Source, sample_rate: int | None = None,
                       options: ClientOptions | None = None) -> AsyncIterator[dict]:
    """Connect, send the config and the audio, yield every event until the server's summary.

    The stream counts as complete only when the summary arrives: a connection that closes (or goes
    silent for `final_timeout`) before it raises IncompleteStreamError, never a quiet early end.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake

    options = options or ClientOptions()
    rate, chunks, paceable = _chunks_of(source, sample_rate, options.chunk_ms)
    headers = {"Authorization": f"Bearer {options.token}"} if options.token else {}
    try:
        ws = await connect(url, additional_headers=headers, open_timeout=options.open_timeout, max_size=2**24)
    except (OSError, InvalidHandshake, asyncio.TimeoutError) as exc:
        raise IncompleteStreamError(f"cannot connect to {url}: {exc or type(exc).__name__}") from None
    async with ws:
        try:
            await ws.send(StreamConfig.of(options, rate).message())
        except ConnectionClosed:
            pass  # rejected before the config arrived (token, capacity): the error event is still readable
        try:
            ready = json.loads(await asyncio.wait_for(ws.recv(), options.open_timeout))
        except ConnectionClosed as exc:
            raise _closed(exc, "before the server was ready") from None
        except asyncio.TimeoutError:
            raise IncompleteStreamError(f"no `ready` from the server within {options.open_timeout:g} s") from None
        yield ready
        if ready.get("type") == ERROR and options.raise_on_error:
            raise ServerError(ready)
        if ready.get("type") not in (READY, ERROR):
            raise IncompleteStreamError(f"expected `ready` from the server, got {ready.get('type')!r}")
        progress = _Progress()
        window = options.send_ahead_seconds if options.overflow == "block" else None
        pace = paceable and options.realtime
        # After a rejection there is nothing to send: only the summary is left to read.
        audio = chunks if ready.get("type") == READY else []
        sender = asyncio.create_task(_send_audio(ws, audio, rate, options.encoding, pace, progress, window))
        try:
            while True:
                timeout = None if not sender.done() else options.final_timeout
                try:
                    event = json.loads(await asyncio.wait_for(ws.recv(), timeout))
                except ConnectionClosed as exc:
                    raise _closed(exc, "while streaming") from None
                except asyncio.TimeoutError:
                    raise IncompleteStreamError(f"no event from the server for {options.final_timeout:g} s after "
                                                f"the audio was sent; the summary never came") from None
                if event.get("type") == ACK:
                    progress.ack(event["audio_seconds"])
                    continue
                yield event
                if event.get("type") == ERROR and options.raise_on_error:
                    raise ServerError(event)
                if event.get("type") == SUMMARY:
                    return
        finally:
            sender.cancel()


async def _send_audio(ws, chunks: Iterable[np.ndarray], rate: int, encoding: str, pace: bool,
                      progress: _Progress, window: float | None) -> None:
    from websockets.exceptions import ConnectionClosed

    iterator, sent, start = iter(chunks), 0, time.perf_counter()
    try:
        while True:
            # A microphone iterator blocks while it waits for audio: keep that off the event loop.
            chunk = next(iterator, None) if pace or isinstance(chunks, list) else await asyncio.to_thread(next, iterator, None)
            if chunk is None:
                break
            if pace:
                await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
            # Block mode: stay within the window of acknowledged audio (the server's TCP backpressure
            # alone would let socket buffers hold minutes of audio ahead of our keepalive pings).
            while window is not None and progress.sent - progress.acked > window:
                progress.changed.clear()
                await progress.changed.wait()
            await ws.send(encode_frame(chunk, encoding))
            sent += len(chunk)
            progress.sent = sent / rate
        await ws.send(dumps({"type": END}))
    except ConnectionClosed:
        pass  # the receiving side reports why


def stream(url: str, source: Source, sample_rate: int | None = None,
           options: ClientOptions | None = None, **overrides) -> Iterator[dict]:
    """Blocking version of `stream_async` for plain scripts and CLIs; keyword overrides set ClientOptions fields."""
    options = options or ClientOptions(**overrides)
    events: queue.Queue = queue.Queue(maxsize=1000)
    done = object()

    async def pump() -> None:
        try:
            async for event in stream_async(url, source, sample_rate, options):
                await asyncio.to_thread(events.put, event)
        except BaseException as exc:  # handed to the caller's thread below
            events.put(exc)
        finally:
            events.put(done)

    thread = threading.Thread(target=asyncio.run, args=(pump(),), daemon=True)
    thread.start()
    while (item := events.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item
    thread.join(timeout=5)


def transcribe_file(base_url: str, path: str | Path, model: str | None = None, token: str | None = None,
                    timeout: float = 300.0) -> dict:
    """One-shot POST /transcribe of a whole file; returns the transcript dict."""
    import httpx

    token = token or os.environ.get(TOKEN_ENV)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    params = {"model": model} if model else {}
    response = httpx.post(base_url.rstrip("/") + "/transcribe", content=Path(path).read_bytes(),
                          headers={**headers, "Content-Type": "audio/wav"}, params=params, timeout=timeout)
    if response.status_code != 200:
        raise ServerError({"code": response.status_code, "message": response.text})
    return response.json()
