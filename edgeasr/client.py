"""Stream audio to an `edgeasr-server` and read its events (protocol: server/README.md).

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
from typing import Any, AsyncIterator, Iterable, Iterator

import numpy as np

from edgeasr.errors import EdgeASRError

TOKEN_ENV = "EDGEASR_SERVER_TOKEN"
Source = str | Path | np.ndarray | Iterable[np.ndarray]


class ServerError(EdgeASRError):
    """The server rejected or ended the stream with an error event (see `code`)."""

    def __init__(self, event: dict) -> None:
        super().__init__(f"server error {event.get('code')} ({event.get('close_code')}): {event.get('message')}")
        self.code = event.get("code")
        self.event = event


@dataclass
class ClientOptions:
    """What to ask the server for and how to send the audio."""

    token: str | None = field(default_factory=lambda: os.environ.get(TOKEN_ENV) or None)
    """Server token; default $EDGEASR_SERVER_TOKEN."""
    model: str | None = None
    """Served model name (None: the server's default)."""
    recipe: dict | None = None
    """Quantized recipe {"model", "method", "w_bits"} instead of a model name."""
    checkpoint: str | None = None
    """Quantized checkpoint label in the server's cache instead of a model name."""
    partials: bool = True
    """Ask for partial lines (False: finals only)."""
    max_queue_seconds: float | None = None
    """Ask the server to queue at most this much audio (lower: less lag, more dropped audio when it is busy)."""
    overflow: str = "drop"
    """When the server's queue is full: "drop" audio (live sources) or "block" (faster-than-real-time replays)."""
    encoding: str = "pcm16"
    """Wire encoding of audio frames: pcm16 (half the bytes) or float32."""
    chunk_ms: int = 100
    """Audio per frame when the source is a file or an array."""
    realtime: bool = True
    """Pace file and array sources at real-time speed (as a microphone would); False sends at once."""
    open_timeout: float = 30.0
    """Seconds to connect and get the `ready` event (includes a model load on the server)."""
    final_timeout: float = 120.0
    """Seconds to wait for the summary after the audio ended."""
    raise_on_error: bool = True
    """Raise ServerError after yielding an error event (False: just yield it)."""

    def config(self, sample_rate: int) -> dict[str, Any]:
        data = {"sample_rate": sample_rate, "encoding": self.encoding, "partials": self.partials,
                "overflow": self.overflow}
        for key in ("model", "recipe", "checkpoint", "max_queue_seconds"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data


def _encode(chunk: np.ndarray, encoding: str) -> bytes:
    chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
    if encoding == "pcm16":
        return (np.clip(chunk, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    return chunk.astype("<f4").tobytes()


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


async def stream_async(url: str, source: Source, sample_rate: int | None = None,
                       options: ClientOptions | None = None) -> AsyncIterator[dict]:
    """Connect, send the config and the audio, yield every event until the server's summary."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    options = options or ClientOptions()
    rate, chunks, paceable = _chunks_of(source, sample_rate, options.chunk_ms)
    headers = {"Authorization": f"Bearer {options.token}"} if options.token else {}
    async with connect(url, additional_headers=headers, open_timeout=options.open_timeout,
                       max_size=2**24) as ws:
        try:
            await ws.send(json.dumps(options.config(rate)))
        except ConnectionClosed:
            pass  # rejected before the config arrived (token, capacity): the error event is still readable
        try:
            ready = json.loads(await asyncio.wait_for(ws.recv(), options.open_timeout))
        except ConnectionClosed as exc:
            raise ServerError({"code": "closed", "close_code": exc.rcvd.code if exc.rcvd else None,
                               "message": "server closed the connection before it was ready"}) from None
        yield ready
        if ready.get("type") == "error":
            if options.raise_on_error:
                raise ServerError(ready)
            return
        sender = asyncio.create_task(_send_audio(ws, chunks, rate, options, paceable and options.realtime))
        try:
            while True:
                timeout = None if not sender.done() else options.final_timeout
                try:
                    event = json.loads(await asyncio.wait_for(ws.recv(), timeout))
                except ConnectionClosed:
                    return
                yield event
                if event.get("type") == "error" and options.raise_on_error:
                    raise ServerError(event)
                if event.get("type") == "summary":
                    return
        finally:
            sender.cancel()


async def _send_audio(ws, chunks: Iterable[np.ndarray], rate: int, options: ClientOptions, pace: bool) -> None:
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
            await ws.send(_encode(chunk, options.encoding))
            sent += len(chunk)
        await ws.send(json.dumps({"type": "end"}))
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
