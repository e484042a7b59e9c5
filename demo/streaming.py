"""Audio chunks from the browser → one `StreamingSession` per browser session → text and readouts.

Gradio delivers microphone chunks at the browser's rate (often 48 kHz, int16, sometimes stereo); a
streaming resampler keeps chunk edges seamless, which per-chunk resampling would not.

Microphone chunks are handed to a worker thread (`submit`) rather than decoded in the request: the
browser skips chunks while a request is pending, so a handler that decodes loses audio whenever the
CPU lags real time. The worker feeds every chunk in order; the lag it accumulates is shown.

Every session of the demo (each browser tab's Live stream, each A/B side) decodes on one shared
`DecodeScheduler` (edgeasr/stream/scheduler.py), the server's: one decode at a time, since each uses
every core; accepting audio (VAD, end of turn, finals) before anyone's partial; partials coalesced and
spaced out under load.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field, replace
from functools import cache

import numpy as np
import soxr

from edgeasr.audio import SAMPLE_RATE, prepare_audio
from edgeasr.engine import Engine
from edgeasr.stream import LineChanged, LineCompleted, LineStarted, SessionOptions, StreamingSession
from edgeasr.stream.scheduler import DecodeScheduler, ThreadSessionRunner

from .engines import EngineKey

EMPTY_TRANSCRIPT = "*(listening: speak, or stream a sample clip)*"
WORKER_IDLE_SECONDS = 30.0
"""A microphone worker with nothing to do for this long ends (the next chunk starts a new one)."""


@cache
def decode_scheduler() -> DecodeScheduler:
    """The demo's one decode worker (created on first use), shared by every streaming session."""
    return DecodeScheduler(workers=1, name="demo-decode")


def to_mono_float(samples: np.ndarray) -> np.ndarray:
    """int16 / multi-channel browser audio → float32 mono at its own rate (no resampling here)."""
    samples = np.asarray(samples)
    if samples.size == 0:
        return np.zeros(0, np.float32)
    return prepare_audio(samples, SAMPLE_RATE)


@dataclass
class Transcriber:
    """What one browser session streams into: its engine's session, finals so far and the open partial."""

    key: EngineKey
    session: StreamingSession
    input_rate: int = SAMPLE_RATE
    resampler: soxr.ResampleStream | None = None
    finals: list[LineCompleted] = field(default_factory=list)
    partial: str = ""
    notes: list[str] = field(default_factory=list)
    """Lines shown between finals (e.g. a recipe switch)."""
    order: list[tuple[str, int]] = field(default_factory=list)
    """("final" | "note", index) in transcript order, so notes stay where they happened."""
    recipe_since: int = 0
    """Index of the first final of the current recipe: readouts never mix recipes."""
    captured_from: float | None = None
    """Wall time the current stream's first sample was captured (None between streams)."""
    processed_until: float | None = None
    """Wall time the newest sample fed through the session was captured."""
    worst_lag: float | None = None
    """Largest lag of the current (or the last) stream, in seconds; None before any stream."""
    received_seconds: float = 0.0
    """Microphone audio the browser delivered in the current stream (via `submit`)."""
    skipped_seconds: float = 0.0
    """Audio of the current (or the last) microphone stream the browser never delivered."""
    inbox: queue.Queue = field(default_factory=queue.Queue, repr=False)
    """Submitted chunks waiting for the worker."""
    worker: threading.Thread | None = field(default=None, repr=False)
    failure: BaseException | None = None
    """What stopped the worker, raised to the next caller of `check`."""
    runner: ThreadSessionRunner = field(init=False, repr=False)
    """Runs `session` on the shared decode scheduler; the key stays across recipe switches."""

    def __post_init__(self) -> None:
        self.runner = ThreadSessionRunner(decode_scheduler(), self.session, self._apply, key=id(self))

    @classmethod
    def start(cls, key: EngineKey, engine: Engine, options: SessionOptions | None = None) -> "Transcriber":
        return cls(key, _session(engine, options or SessionOptions()))

    def feed(self, rate: int, samples: np.ndarray, captured_at: float | None = None) -> None:
        """Push one chunk at `rate` Hz, captured at `captured_at` (default: just now); updates finals and the
        partial line."""
        captured_at = time.perf_counter() if captured_at is None else captured_at
        if self.captured_from is None:  # a stream fed directly (a replay), not through `submit`
            self.captured_from, self.worst_lag, self.skipped_seconds = captured_at - len(samples) / rate, 0.0, 0.0
        self._feed([(rate, samples)], captured_at)

    def _feed(self, chunks: list[tuple[int, np.ndarray]], captured_at: float) -> None:
        """Accept chunks as one piece of audio: one job, so no other session's partial runs in between."""
        pieces = [self._resample(rate, to_mono_float(samples)) for rate, samples in chunks]
        audio = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        if audio.size:
            self.runner.accept(audio)
        else:
            self.runner.audio_waiting(False)
        self.processed_until = captured_at
        self.worst_lag = max(self.worst_lag or 0.0, self.lag_seconds())

    def _resample(self, rate: int, audio: np.ndarray) -> np.ndarray:
        if rate == SAMPLE_RATE:
            return audio
        if self.resampler is None or self.input_rate != rate:
            self.input_rate, self.resampler = rate, soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
        return self.resampler.resample_chunk(audio)

    def submit(self, rate: int, samples: np.ndarray) -> None:
        """Queue a chunk that has just been captured; the worker feeds it (in order), the caller returns now."""
        now = time.perf_counter()
        if self.captured_from is None:
            self.captured_from, self.worst_lag = now - len(samples) / rate, 0.0
            self.received_seconds = 0.0
        self.received_seconds += len(samples) / rate
        # Recording time the browser sent nothing for: it skips chunks while a request is pending.
        self.skipped_seconds = max(0.0, now - self.captured_from - self.received_seconds)
        self.runner.audio_waiting()  # before the chunk can be taken: its accept clears the mark
        self.inbox.put((rate, samples, now))
        if self.worker is None or not self.worker.is_alive():
            self.worker = threading.Thread(target=self._work, name="live-mic", daemon=True)
            self.worker.start()

    def _work(self) -> None:
        while True:
            try:
                batch = [self.inbox.get(timeout=WORKER_IDLE_SECONDS)]
            except queue.Empty:
                return
            # Take everything waiting: one accept over more audio catches up faster than many small ones.
            while not self.inbox.empty():
                batch.append(self.inbox.get_nowait())
            try:
                if self.failure is None:
                    self._feed([(rate, samples) for rate, samples, _ in batch], batch[-1][2])
            except Exception as exc:  # noqa: BLE001 - reported by the next handler call (`check`)
                self.failure = exc
            finally:
                if self.failure is not None:
                    self.runner.audio_waiting(False)  # never accepted: must not hold back others' partials
                for _ in batch:
                    self.inbox.task_done()

    def check(self) -> None:
        """Raise what stopped the worker, once."""
        failure, self.failure = self.failure, None
        if failure is not None:
            raise failure

    def drain(self) -> None:
        """Wait until every submitted chunk has been fed."""
        self.inbox.join()
        self.check()

    def lag_seconds(self) -> float:
        """How far processing is behind the audio's capture: now minus the capture time of the newest
        sample processed (0 between streams). Grows while a slow decode holds the stream up."""
        if self.captured_from is None:
            return 0.0
        return max(0.0, time.perf_counter() - (self.processed_until or self.captured_from))

    def finish(self) -> None:
        """Complete the open line (recording stopped, clip ended, recipe switched)."""
        self.drain()
        if self.resampler is not None:
            tail = self.resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            self.resampler = None
            if tail.size:
                self.runner.accept(tail)
        self.runner.finish()
        self.partial = ""
        self.captured_from = self.processed_until = None

    def switch(self, key: EngineKey, engine: Engine) -> None:
        """Carry on with another recipe: close the open line, keep the transcript, mark the switch."""
        self.finish()
        self.key = key
        self._open(StreamingSession(engine, self.session.options))
        self.recipe_since = len(self.finals)
        self.notes.append(f"switched to {key.label}")
        self.order.append(("note", len(self.notes) - 1))

    def set_end_of_turn(self, mode: str) -> None:
        """Smart Turn ("smart") or the VAD hangover ("vad") from the next line on; the open line is completed."""
        options = self.session.options
        if mode != options.turn.mode:
            self.finish()
            self._open(StreamingSession(self.session.engine, replace(options, turn=replace(options.turn, mode=mode))))

    def _open(self, session: StreamingSession) -> None:
        self.session = session
        self.runner = ThreadSessionRunner(self.runner.scheduler, session, self._apply, key=self.runner.key)

    def _apply(self, events: list) -> None:
        for event in events:
            if isinstance(event, (LineStarted, LineChanged)):
                self.partial = event.text
            elif isinstance(event, LineCompleted):
                self.partial = ""
                if event.text:
                    self.finals.append(event)
                    self.order.append(("final", len(self.finals) - 1))

    @property
    def recipe_finals(self) -> list[LineCompleted]:
        """Finals of the current recipe (after the last switch)."""
        return self.finals[self.recipe_since:]

    @property
    def text(self) -> str:
        """Final lines joined: the clip's transcript."""
        return " ".join(line.text for line in self.finals)

    def markdown(self) -> str:
        """Finals one per line, recipe notes in bold, the open partial in italics at the end."""
        shown = [f"**{self.notes[i]}**" if kind == "note" else self.finals[i].text for kind, i in self.order]
        if self.partial:
            shown.append(f"*{self.partial} …*")
        return "\n\n".join(shown) or EMPTY_TRANSCRIPT


def _session(engine: Engine, options: SessionOptions) -> StreamingSession:
    """A session whose partials the scheduler runs (never inside `accept`)."""
    return StreamingSession(engine, replace(options, inline_partials=False))


def replay(engine: Engine, key: EngineKey, audio: np.ndarray, rate: int, chunk_seconds: float = 0.5,
           options: SessionOptions | None = None) -> Transcriber:
    """Stream a whole recording through a fresh session in fixed chunks, as a microphone would deliver it."""
    transcriber = Transcriber.start(key, engine, options)
    step = max(1, int(chunk_seconds * rate))
    for start in range(0, len(audio), step):
        transcriber.feed(rate, audio[start:start + step])
    transcriber.finish()
    return transcriber
