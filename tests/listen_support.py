"""Run `edgeasr-listen` as a user would: a subprocess reading real speech, interrupted with Ctrl-C (SIGINT)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

from edgeasr.registry import fetch_package, find_file
from edgeasr.zoo.catalog import MOONSHINE_VOICE


def listen_command() -> list[str]:
    script = shutil.which("edgeasr-listen")
    return [script] if script else [sys.executable, "-m", "edgeasr.listen"]


def long_speech() -> str:
    """44 s of continuous reading (A Tale of Two Cities), long enough to interrupt mid-way."""
    return str(find_file(fetch_package(MOONSHINE_VOICE), "assets/two_cities.wav"))


def interrupt_after_first_partial(args: list[str], env: dict | None = None,
                                  timeout: float = 180.0) -> tuple[dict, list[dict], int, str]:
    """Replay at real-time speed, send SIGINT once a line has partial text, collect the rest.

    Returns (the partial that triggered the interrupt, the events printed after it, exit code, stderr).
    """
    proc = subprocess.Popen(listen_command() + args + ["--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] + [lines.put(None)], daemon=True).start()
    deadline = time.monotonic() + timeout
    trigger, after = None, []
    try:
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                continue
            if line is None:
                break
            event = json.loads(line)
            if trigger is None:
                if event["type"] == "LineChanged" and event["text"].strip():
                    trigger = event
                    proc.send_signal(signal.SIGINT)
            else:
                after.append(event)
        returncode = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
    assert trigger is not None, f"no partial before the deadline: {proc.stderr.read()}"
    return trigger, after, returncode, proc.stderr.read()
