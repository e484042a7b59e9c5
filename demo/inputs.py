"""Audio the user brings (upload or recording) → 16 kHz mono float32, or one message in the app's words.

Gradio hands the demo a file path (no conversion of its own), so every unreadable, empty, NaN or
non-audio file is caught here with the same message, without the decoder's output or server paths.
Silence is valid audio: the comparison itself says that no speech was detected.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgeasr.audio import prepare_audio

log = logging.getLogger(__name__)

UNREADABLE = ("This file could not be used as audio: it is not a sound file we can read, or it is empty or "
              "damaged. Upload a WAV, FLAC, MP3 or OGG recording (or record with the microphone).")


class ClipError(ValueError):
    """Audio the demo cannot use; its message is written for the user."""


def load_clip(path: str | Path | None) -> np.ndarray:
    """The audio at `path` as 16 kHz mono float32; ClipError with `UNREADABLE` for anything unusable."""
    if path is None:
        raise ClipError("No audio: pick a sample clip, upload a file or record with the microphone first.")
    try:
        audio = prepare_audio(path)
    except Exception as exc:  # noqa: BLE001 - every decoder failure gets the same message in the UI
        # The details (decoder output, temp paths) belong in the server log, not in the browser.
        log.info("rejected upload %s: %s: %s", Path(path).name, type(exc).__name__, exc)
        raise ClipError(UNREADABLE) from exc
    return audio
