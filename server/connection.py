"""One streaming connection: config → engine → receive frames into a bounded queue → decode → events.

Two tasks per connection: the receiver reads frames as fast as they come (so idle and size limits and
protocol errors are noticed at once) and the consumer feeds the session on the shared decode pool.
The queue holds at most `max_queue_seconds`; a frame longer than that is split into queue-sized pieces.
With `overflow: "drop"` what does not fit is dropped and reported in a `dropped` event, so a slow CPU
costs text, never unbounded memory; with `"block"` the receiver waits for room (TCP backpressure) and
nothing is dropped, and the consumer acknowledges decoded audio (`ack`) so the client can keep what it
has in flight small enough that keepalive pings are never stuck behind it. Only the consumer (with the
session's partial task, whose events `SessionRunner` keeps in order with the consumer's, one whole
message per send) and, after it stopped, `serve` send. Partials run at low priority on the shared
scheduler (server/scheduler.py): a final never waits behind another session's partial. Every stream that got past the handshake
ends with a `summary`, and a stream the server ends (idle timeout, session limit) has its open line
decoded first.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
import logging
import time
from collections import deque

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from edgeasr.audio import SAMPLE_RATE
from edgeasr.protocol import ACK, DROPPED, READY, SUMMARY, ProtocolError, StreamConfig, decode_frame, dumps, is_end, parse_text
from edgeasr.stream import LineCompleted, SessionOptions, StreamingSession
from edgeasr.stream.scheduler import SessionRunner

from .engines import EngineHub
from .metrics import Metrics, percentiles
from .options import ServerOptions
from .protocol import Resampler

log = logging.getLogger(__name__)
_END = object()
_DROPPED = object()
"""Queue marker: audio was dropped since the last `dropped` event (so even a stream whose every frame is
dropped gets one)."""
_ids = itertools.count(1)


class _Disconnected(Exception):
    """The client went away without a close handshake."""


class Connection:
    """Serves one accepted, authorised WebSocket until it ends; never raises to the caller."""

    def __init__(self, ws: WebSocket, hub: EngineHub, metrics: Metrics, options: ServerOptions) -> None:
        self.ws, self.hub, self.metrics, self.options = ws, hub, metrics, options
        self.id = next(_ids)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.pending = 0
        """Samples (16 kHz) waiting in the queue; bounded by max_queue_seconds."""
        self.received = 0
        self.processed = 0
        self.dropped = 0
        self.late = 0
        self._drop_notice = 0
        self._drained = asyncio.Event()
        """Set by the consumer whenever it takes audio off the queue (wakes a blocked receiver)."""
        self._arrivals: deque[tuple[int, float]] = deque()
        """(end sample, wall time received) of recent frames, to time events from the audio they cover."""
        self.latencies: deque[float] = deque(maxlen=1000)
        self.lines = self.partials = 0
        self.model = ""
        self.session: StreamingSession | None = None
        self.runner: SessionRunner | None = None
        """Feeds the session on the hub's scheduler: accept (finals) before anyone's partials."""
        self.block = False
        """overflow "block": wait for queue room instead of dropping, acknowledge decoded audio."""
        self._decoding = False
        """The consumer is decoding this stream's audio (the idle timeout waits for it)."""
        self.started = time.perf_counter()

    async def serve(self) -> None:
        consumer: asyncio.Task | None = None
        reason, error = "end", None
        try:
            config = await self._read_config()
            engine = await self.hub.get(config)
            self.model = engine.name
            options = SessionOptions(partials=config.partials, inline_partials=False)
            if config.end_of_turn is not None:
                options = replace(options, turn=replace(options.turn, mode=config.end_of_turn))
            if config.vad is not None:
                options = replace(options, vad=replace(options.vad, kind=config.vad))
            # In a thread: the first session may load the end-of-turn model (or Silero VAD).
            self.session = await asyncio.to_thread(StreamingSession, engine, options)
            self.runner = SessionRunner(self.hub.pool, self.session, self._emit, key=self.id)
            self.block = config.overflow == "block"
            await self._send({"type": READY, "session": self.id, "model": engine.name, "sample_rate": SAMPLE_RATE,
                              "input_sample_rate": config.sample_rate, "encoding": config.encoding,
                              "max_frame_bytes": self.options.max_frame_bytes,
                              "max_queue_seconds": min(self.options.max_queue_seconds,
                                                       config.max_queue_seconds or float("inf")),
                              "overflow": config.overflow})
            consumer = asyncio.create_task(self._consume())
            receiver = asyncio.create_task(self._receive(config))
            done, _ = await asyncio.wait({consumer, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done:
                # None after {"type": "end"}, or the limit (idle, session length) that ended the stream;
                # either way the queued audio and the open line are decoded. A protocol error raises here.
                error = receiver.result()
                await asyncio.wait_for(consumer, timeout=60 + 10 * self.options.max_queue_seconds)
            else:
                receiver.cancel()
                consumer.result()  # re-raises what stopped the consumer
                raise ProtocolError("internal_error", "decoder stopped unexpectedly")
            if error is not None:
                reason = error.code
                self.metrics.errors[error.code] += 1
                await self._send(error.event())
            await self._send(self._summary(reason))
            await self.ws.close(1000 if error is None else error.close_code, reason[:120])
        except ProtocolError as exc:
            await self._fail(exc, consumer)
        except (_Disconnected, WebSocketDisconnect):
            self._stop(consumer)
            self.metrics.disconnects += 1
            log.info("session %d: client disconnected after %.1f s of audio", self.id, self.received / SAMPLE_RATE)
        except Exception as exc:  # a bug must end this connection only, never the server
            log.exception("session %d failed", self.id)
            await self._fail(ProtocolError("internal_error", f"{type(exc).__name__}: {exc}"), consumer)
        finally:
            self._stop(consumer)
            if self.runner is not None:
                self.runner.close()

    # -- receiving ------------------------------------------------------------------------------

    async def _next_message(self) -> dict:
        while True:
            try:
                message = await asyncio.wait_for(self.ws.receive(), timeout=self.options.idle_timeout)
                break
            except asyncio.TimeoutError:
                # Idle = the client is silent and none of its audio is left to decode: a block-mode client
                # waiting for `ack`s while the server works through its backlog is not idle.
                if not (self.pending or self._decoding):
                    raise ProtocolError("idle_timeout", f"nothing received for {self.options.idle_timeout:g} s "
                                                        "with nothing left to decode") from None
        if message["type"] == "websocket.disconnect":
            raise _Disconnected()
        return message

    async def _read_config(self) -> StreamConfig:
        message = await self._next_message()
        if message.get("text") is None:
            raise ProtocolError("invalid_config", "send the JSON config as a text message before any audio, e.g. "
                                                  '{"sample_rate": 16000, "encoding": "pcm16"}')
        return StreamConfig.parse(message["text"])

    async def _receive(self, config: StreamConfig) -> ProtocolError | None:
        """Read frames until {"type": "end"}, the session limit or the idle timeout; raise on protocol errors.

        Returns None after `end`, or the limit that ended the stream; either way the resampler is
        flushed and the consumer told to finish, so what was heard gets decoded.
        """
        resample = Resampler(config.sample_rate)
        limit = int(self.options.max_session_seconds * SAMPLE_RATE)
        capacity = max(1, int(min(self.options.max_queue_seconds, config.max_queue_seconds or float("inf"))
                              * SAMPLE_RATE))
        ended: ProtocolError | None = None
        while ended is None:
            try:
                message = await self._next_message()
            except ProtocolError as exc:
                if exc.code != "idle_timeout":
                    raise
                ended = exc
                break
            if message.get("text") is not None:
                if is_end(parse_text(message["text"], "unexpected_text")):
                    break
                raise ProtocolError("unexpected_text", 'after the config only binary audio frames and '
                                                       '{"type": "end"} are allowed')
            payload = message.get("bytes") or b""
            if len(payload) > self.options.max_frame_bytes:
                raise ProtocolError("frame_too_large", f"frame of {len(payload)} bytes exceeds "
                                                       f"{self.options.max_frame_bytes}; send smaller chunks (~100 ms)")
            await self._enqueue(resample(decode_frame(payload, config.encoding)), capacity)
            if self.received >= limit:
                ended = ProtocolError("session_too_long", f"session reached {self.options.max_session_seconds:g} s "
                                                          f"of audio; open a new connection to go on")
        await self._enqueue(resample(np.zeros(0, np.float32), last=True), capacity)
        self.queue.put_nowait(_END)
        return ended

    async def _enqueue(self, samples: np.ndarray, capacity: int) -> None:
        """Queue audio in pieces of at most `capacity`: "block" waits for room, "drop" drops what does not fit."""
        for start in range(0, samples.size, capacity):
            piece = samples[start:start + capacity]
            if self.block:
                # Stop reading until the decoder makes room, so TCP flow control paces the sender.
                while self.pending + piece.size > capacity:
                    self._drained.clear()
                    await self._drained.wait()
            room = max(0, capacity - self.pending)
            if piece.size > room:
                # Decoding is behind by more than the queue holds: drop new audio rather than grow memory.
                lost = piece.size - room
                if not self._drop_notice:
                    self.queue.put_nowait(_DROPPED)
                self.dropped += lost
                self._drop_notice += lost
                self.metrics.dropped_seconds += lost / SAMPLE_RATE
                piece = piece[:room]
            if piece.size:
                self.pending += piece.size
                self.received += piece.size
                self.metrics.audio_seconds += piece.size / SAMPLE_RATE
                self.queue.put_nowait((piece, time.perf_counter()))
                self.runner.audio_waiting()

    # -- decoding -------------------------------------------------------------------------------

    async def _consume(self) -> None:
        while True:
            batch = [await self.queue.get()]
            # Take everything waiting: one decode over more audio catches up faster than many small ones.
            while batch[-1] is not _END and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            frames = [item for item in batch if isinstance(item, tuple)]
            if frames:
                self._decoding = True
                try:
                    await self._accept(frames)
                finally:
                    self._decoding = False
            await self._report_drops()
            if batch[-1] is _END:
                await self.runner.finish(0.0)
                return

    async def _accept(self, frames: list[tuple[np.ndarray, float]]) -> None:
        samples = np.concatenate([f[0] for f in frames]) if len(frames) > 1 else frames[0][0]
        waited = time.perf_counter() - frames[0][1]
        self.pending -= samples.size
        self._drained.set()
        for chunk, arrived in frames:
            self.processed += chunk.size
            self._arrivals.append((self.processed, arrived))
        # Keep arrival times only as far back as a line can reach (its start plus the model's window).
        while self._arrivals and self._arrivals[0][0] < self.processed - 60 * SAMPLE_RATE:
            self._arrivals.popleft()
        self.metrics.queue_ms.append(1000 * waited)
        if waited * 1000 > self.options.late_ms:
            self.late += samples.size
            self.metrics.late_seconds += samples.size / SAMPLE_RATE
        await self.runner.accept(samples, waited)
        if self.block:
            await self._send({"type": ACK, "audio_seconds": round(self.processed / SAMPLE_RATE, 3)})

    async def _report_drops(self) -> None:
        if self._drop_notice:
            notice, self._drop_notice = self._drop_notice, 0
            await self._send({"type": DROPPED, "seconds": round(notice / SAMPLE_RATE, 3),
                              "total_seconds": round(self.dropped / SAMPLE_RATE, 3),
                              "message": "decoding fell behind real time; this audio was not transcribed"})

    def _arrival(self, seconds: float) -> float | None:
        target = int(seconds * SAMPLE_RATE)
        for end, arrived in self._arrivals:
            if end >= target:
                return arrived
        return None

    async def _emit(self, events: list, waited: float) -> None:
        pad = self.session.options.final_pad_ms / 1000
        for event in events:
            data = event.to_dict()
            final = isinstance(event, LineCompleted)
            # A final is decided by where speech ended (its end minus the pad); a partial by its last sample.
            arrived = self._arrival(max(event.start, event.end - pad) if final else event.end)
            data["e2e_ms"] = round(1000 * (time.perf_counter() - arrived), 1) if arrived is not None else None
            data["queue_ms"] = round(1000 * waited, 1)
            if final:
                self.lines += 1
                self.metrics.finals += 1
                self.metrics.decode_ms.append(event.decode_ms)
                if data["e2e_ms"] is not None:
                    self.latencies.append(data["e2e_ms"])
                    self.metrics.final_latency_ms.append(data["e2e_ms"])
            else:
                self.partials += 1
                self.metrics.partials += 1
            await self._send(data)

    # -- sending and closing --------------------------------------------------------------------

    async def _send(self, data: dict) -> None:
        try:
            await self.ws.send_text(dumps(data))
        except (WebSocketDisconnect, RuntimeError) as exc:  # RuntimeError: already closed
            raise _Disconnected() from exc

    def _summary(self, reason: str) -> dict:
        session = self.session
        return {"type": SUMMARY, "session": self.id, "model": self.model, "reason": reason,
                "audio_seconds": round(self.processed / SAMPLE_RATE, 3),
                "dropped_seconds": round(self.dropped / SAMPLE_RATE, 3),
                "late_seconds": round(self.late / SAMPLE_RATE, 3),
                "lines": self.lines, "partials": self.partials,
                "partial_decodes": session.partial_decodes if session else 0,
                "skipped_partials": session.skipped_partials if session else 0,
                "final_latency_ms": percentiles(self.latencies),
                "wall_seconds": round(time.perf_counter() - self.started, 3)}

    async def _fail(self, error: ProtocolError, consumer: asyncio.Task | None) -> None:
        self._stop(consumer)
        self.metrics.errors[error.code] += 1
        log.info("session %d: %s: %s", self.id, error.code, error.message)
        await self.close_with(error)

    async def close_with(self, error: ProtocolError) -> None:
        """Send the error and the summary, then close with the error's code (also used for rejections)."""
        try:
            await self.ws.send_text(dumps(error.event()))
            await self.ws.send_text(dumps(self._summary(error.code)))
            await self.ws.close(error.close_code, error.code)
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client is gone already; nothing left to tell it

    @staticmethod
    def _stop(task: asyncio.Task | None) -> None:
        if task is not None and not task.done():
            task.cancel()
