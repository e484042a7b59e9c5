"""Finals before partials: one decode scheduler shared by every streaming session of a process.

The server's connections and the demo's browser sessions share CPU through it. Every blocking call on a
session goes through `DecodeScheduler` with a priority: `FINAL` for `StreamingSession.accept` and `finish`
(VAD, end-of-turn scoring, speculative and final decodes), `PARTIAL` for partial re-decodes. A free
worker always takes the most urgent waiting job, oldest first, so a final or an end-of-turn decision never
waits behind queued partials. Running decodes are never interrupted, so with more than one worker partials
get at most `workers - 1` of them at once: one worker is always free of partials, and a final waits at most
for another final, never for a partial re-decode of someone's long line.
Jobs with the same key (one session) never run at the same time, so a session's audio is accepted in
order and its partial never overlaps its `accept`. A front end marks its key as having audio waiting
(`audio_waiting`) the moment audio arrives, before its `accept` job can be queued; no partial starts while
any session has audio waiting, so a partial never slips in between the audio's arrival and the `accept`
that may complete a line with it.

A session runner drives one session (built with `inline_partials=False`) on it: every chunk goes to
`accept` (no audio is ever skipped); when the session reports a partial due, at most one partial job is
queued for it. That job decodes whatever audio has arrived by the time it runs (the partials of a line
coalesce), and the next one is spaced out by `backoff()`, which grows with the jobs waiting per worker
(partial cadence backs off under load). `SessionRunner` serves asyncio front ends (the server),
`ThreadSessionRunner` plain threads (the demo). Torch-free: only the standard library.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

FINAL, PARTIAL = 0, 1
"""Job priorities: lower runs first."""


class DecodeScheduler:
    """A priority thread pool: `workers` threads, most urgent job first, one job per key at a time."""

    def __init__(self, workers: int, name: str = "decode") -> None:
        self.workers = max(1, workers)
        self.partial_slots = max(1, self.workers - 1)
        """Partials that may run at once (one worker stays free for finals where there are two or more)."""
        self._partials_running = 0
        self._cond = threading.Condition()
        self._jobs: list[tuple[int, int, Any, Callable, tuple, Future]] = []
        self._seq = itertools.count()
        self._busy: set = set()
        self._waiting: set = set()
        """Keys with audio received but not yet handed to an `accept` job."""
        self._closed = False
        self.started: list[tuple[int, Any]] = []
        """(priority, key) of recent jobs in the order they started (the last 1000; for tests and metrics)."""
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(self.workers)]
        for thread in self._threads:
            thread.start()

    @property
    def waiting(self) -> int:
        """Jobs queued and not yet started."""
        return len(self._jobs)

    def audio_waiting(self, key: Any, waiting: bool = True) -> None:
        """Note that `key` has audio on its way to an `accept` job (False: it was taken, or the key is gone)."""
        with self._cond:
            if waiting:
                self._waiting.add(key)
            else:
                self._waiting.discard(key)
                self._cond.notify_all()

    def backoff(self) -> float:
        """How far to space out the next partial: 1 when idle, +1 for every worker's worth of waiting jobs."""
        return 1.0 + len(self._jobs) / self.workers

    def submit(self, fn: Callable[..., T], *args, priority: int = FINAL, key: Any = None) -> Future:
        """Queue blocking `fn(*args)`; the returned future settles when it ran (cancel it to skip it)."""
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the decode scheduler is closed")
            self._jobs.append((priority, next(self._seq), key, fn, args, future))
            if priority == FINAL:
                self._waiting.discard(key)  # the audio that was waiting is in this job (atomically: no gap)
            self._cond.notify()
        return future

    def call(self, fn: Callable[..., T], *args, priority: int = FINAL, key: Any = None) -> T:
        """Run `fn(*args)` when its turn comes and return its result (blocks the calling thread)."""
        return self.submit(fn, *args, priority=priority, key=key).result()

    async def run(self, fn: Callable[..., T], *args, priority: int = FINAL, key: Any = None) -> T:
        """Run `fn(*args)` when its turn comes; the event loop stays free meanwhile."""
        return await asyncio.wrap_future(self.submit(fn, *args, priority=priority, key=key))

    def _next(self):
        """The most urgent job whose key is not running (called with the lock held)."""
        partials_may_start = not self._waiting and self._partials_running < self.partial_slots
        runnable = [job for job in self._jobs if (job[2] is None or job[2] not in self._busy)
                    and (job[0] != PARTIAL or partials_may_start)]
        if not runnable:
            return None
        job = min(runnable, key=lambda j: (j[0], j[1]))
        self._jobs.remove(job)
        return job

    def _work(self) -> None:
        while True:
            with self._cond:
                job = None
                while not self._closed and (job := self._next()) is None:
                    self._cond.wait()
                if job is None:
                    return
                priority, _, key, fn, args, future = job
                if not future.set_running_or_notify_cancel():
                    continue  # cancelled while queued (its connection went away)
                if key is not None:
                    self._busy.add(key)
                self._partials_running += priority == PARTIAL
                self.started.append((priority, key))
                del self.started[:-1000]
            try:
                result, error = fn(*args), None
            except BaseException as exc:  # handed to whoever waits on the future, who decides
                result, error = None, exc
            finally:
                with self._cond:
                    self._busy.discard(key)
                    self._partials_running -= priority == PARTIAL
                    self._cond.notify_all()
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

    def close(self) -> None:
        """Stop taking jobs; queued ones are cancelled, running ones finish."""
        with self._cond:
            self._closed = True
            for *_, future in self._jobs:
                future.cancel()
            self._jobs.clear()
            self._cond.notify_all()


def _check_session(session) -> None:
    if session.options.inline_partials:
        raise ValueError("a session runner needs a session built with SessionOptions(inline_partials=False)")


class SessionRunner:
    """Runs one `StreamingSession` (built with `inline_partials=False`) on a shared `DecodeScheduler` from asyncio.

    `emit(events, *args)` is awaited with each batch of events, strictly in the order the session produced
    them (a partial decoded before a final is emitted before it); `args` are those of the latest `accept`.
    """

    def __init__(self, scheduler: DecodeScheduler, session, emit: Callable[..., Awaitable[None]],
                 key: Any = None) -> None:
        _check_session(session)
        self.scheduler, self.session, self.emit = scheduler, session, emit
        self.key = key if key is not None else id(session)
        self._partial: asyncio.Task | None = None
        self._emit_lock = asyncio.Lock()
        self._args: tuple = ()

    async def _emit(self, events: list) -> None:
        # Jobs of one key complete in order and wake their tasks in that order; the FIFO lock keeps it.
        async with self._emit_lock:
            await self.emit(events, *self._args)

    def audio_waiting(self) -> None:
        """Call when audio for this session arrives (before it is handed to `accept`)."""
        self.scheduler.audio_waiting(self.key)

    async def accept(self, samples, *emit_args) -> list:
        """Feed audio (FINAL priority); queue one coalesced partial if the session wants one."""
        events = await self.scheduler.run(self.session.accept, samples, priority=FINAL, key=self.key)
        self._args = emit_args
        await self._emit(events)
        if self.session.partial_due and (self._partial is None or self._partial.done()):
            self._partial = asyncio.create_task(self._run_partial())
        return events

    async def _run_partial(self) -> None:
        # The backoff is read when the job starts (inside the worker), not when it was queued.
        events = await self.scheduler.run(lambda: self.session.partial(self.scheduler.backoff()),
                                          priority=PARTIAL, key=self.key)
        await self._emit(events)

    async def finish(self, *emit_args) -> list:
        """Complete the open line (after any queued partial, which then has nothing left to say)."""
        if self._partial is not None:
            await self._partial
        events = await self.scheduler.run(self.session.finish, priority=FINAL, key=self.key)
        self._args = emit_args
        await self._emit(events)
        return events

    def close(self) -> None:
        """The connection is over: drop its queued partial and its waiting mark."""
        self.scheduler.audio_waiting(self.key, False)
        if self._partial is not None and not self._partial.done():
            self._partial.cancel()


class ThreadSessionRunner:
    """Runs one `StreamingSession` (built with `inline_partials=False`) on a shared `DecodeScheduler` from threads.

    `apply(events)` is called inside the session's own jobs, which never overlap, so every batch is applied
    in the order the session produced it, whichever thread waits. `accept` and `finish` block the caller
    until their job ran; a partial runs later, on its own.
    """

    def __init__(self, scheduler: DecodeScheduler, session, apply: Callable[[list], None], key: Any = None) -> None:
        _check_session(session)
        self.scheduler, self.session, self.apply = scheduler, session, apply
        self.key = key if key is not None else id(session)
        self._partial: Future | None = None

    def audio_waiting(self, waiting: bool = True) -> None:
        """Call when audio for this session arrives (before `accept`); False when it will not be accepted."""
        self.scheduler.audio_waiting(self.key, waiting)

    def accept(self, samples) -> None:
        """Feed audio (FINAL priority); queue one coalesced partial if the session wants one."""
        self.scheduler.call(self._accept, samples, priority=FINAL, key=self.key)

    def _accept(self, samples) -> None:
        self.apply(self.session.accept(samples))
        if self.session.partial_due and (self._partial is None or self._partial.done()):
            self._partial = self.scheduler.submit(self._run_partial, priority=PARTIAL, key=self.key)

    def _run_partial(self) -> None:
        # The backoff is read when the job starts, not when it was queued.
        self.apply(self.session.partial(self.scheduler.backoff()))

    def finish(self) -> None:
        """Complete the open line (FINAL priority: a queued partial runs after it and has nothing left to say)."""
        self.scheduler.call(lambda: self.apply(self.session.finish()), priority=FINAL, key=self.key)
