"""Audio the user brings (upload or recording) → 16 kHz mono float32, or one message in the app's words.

Gradio hands the demo a file path (no conversion of its own), so every unreadable, empty, NaN or
non-audio file is caught here with one message: edgeasr's own reason for the file (named as the user
named it), never the decoder's output or a server path.
Silence is valid audio: the comparison itself says that no speech was detected.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgeasr.audio import prepare_audio
from edgeasr.errors import AudioError

log = logging.getLogger(__name__)

UNREADABLE = "This file could not be used as audio ({why}). Upload a WAV, FLAC, MP3 or OGG recording (or record " \
             "with the microphone)."
UNKNOWN_REASON = "it is not a sound file we can read, or it is empty or damaged"
"""Said when the decoder failed without one of edgeasr's own reasons."""


class ClipError(ValueError):
    """Audio the demo cannot use; its message is written for the user."""


def load_clip(path: str | Path | None) -> np.ndarray:
    """The audio at `path` as 16 kHz mono float32; ClipError with `UNREADABLE` for anything unusable."""
    if path is None:
        raise ClipError("No audio: pick a sample clip, upload a file or record with the microphone first.")
    name = Path(path).name  # the user's file name, never Gradio's temp folder
    try:
        audio = prepare_audio(path, name=name)
    except AudioError as exc:  # edgeasr's own reason ("notes.wav: a text file, not audio")
        log.info("rejected upload: %s", exc)
        raise ClipError(UNREADABLE.format(why=exc)) from exc
    except Exception as exc:  # noqa: BLE001 - any other decoder failure gets the same message in the UI
        # The details (decoder output) belong in the server log, not in the browser.
        log.info("rejected upload %s: %s: %s", name, type(exc).__name__, exc)
        raise ClipError(UNREADABLE.format(why=UNKNOWN_REASON)) from exc
    return audio
