"""Load a recipe while the UI keeps talking: a generator that yields status lines (time so far against
the study's recorded time) until the engine is ready, then returns it.

Use it with `engine = yield from preparing(key, ...)` inside a Gradio generator handler; each yielded
line goes to a status component, so the outputs already shown (side A's result) stay visible.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import TypeVar

from edgeasr.engine import Engine

from .engines import EngineKey
from .estimates import duration, estimate
from .facts import is_loaded, load

TICK_SECONDS = 1.0
"""How often the status line is refreshed while a recipe prepares."""
T = TypeVar("T")


def status_line(key: EngineKey, elapsed: float, expected: float | None, who: str = "") -> str:
    """"B: preparing … 40 s so far, about 3 min in total" (or "longer than recorded")."""
    line = f"{who}preparing **{key.label}** (quantize, export and load; cached afterwards): {elapsed:.0f} s so far"
    if expected is None:
        return line + "."
    if elapsed <= expected:
        return line + f", {duration(expected)} in total as recorded on this kind of machine."
    return line + f"; the study recorded {duration(expected)}, this machine is slower or busier."


def ticking(work: Callable[[], T], line: Callable[[float], str]) -> Generator[str, None, T]:
    """Run `work` in a thread; yield `line(seconds so far)` every `TICK_SECONDS` until it is done; return its result."""
    began = time.monotonic()
    with ThreadPoolExecutor(1, thread_name_prefix="prepare") as pool:
        future = pool.submit(work)
        yield line(0.0)
        while True:
            try:
                return future.result(timeout=TICK_SECONDS)
            except FutureTimeout:
                yield line(time.monotonic() - began)


def preparing(key: EngineKey, results_dir: Path, who: str = "") -> Generator[str, None, Engine]:
    """Yield a status line every second until `key`'s engine is loaded; return the engine."""
    if is_loaded(key):
        return load(key)
    found = estimate(key, results_dir)
    expected = found.seconds if found else None
    return (yield from ticking(lambda: load(key), lambda elapsed: status_line(key, elapsed, expected, who)))
