"""Silero VAD as a second opinion on webrtcvad's voiced frames (`VADOptions(kind="silero")`, never the default).

webrtcvad judges band energies, so HF-radio static passes it as speech, and Moonshine (which has no
no-speech probability) turns such noise into words: codec2's vk2tpm_004 decodes to a Thai date. Silero VAD
(MIT; the `silero_vad.onnx` inside the pinned pipecat-ai wheel, see `edgeasr.zoo.turn_assets`) is a small
recurrent network that scores 32 ms windows. With kind "silero" a webrtcvad frame counts as voiced only
while Silero heard speech in the last `silero_hold_ms` as well. Measured in docs/streaming.md.

Torch-free (onnxruntime and numpy). Each segmenter keeps its own recurrent state; the ONNX session is
loaded once per process and shared. Fail open: when the model cannot be fetched or loaded, segmenters use
webrtcvad alone and one warning is logged.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

import numpy as np

from edgeasr.audio import SAMPLE_RATE

log = logging.getLogger(__name__)

WINDOW = 512
"""Samples Silero scores at a time at 16 kHz (32 ms)."""
CONTEXT = 64
"""Samples of the previous window prepended to each window, as Silero's own wrapper does."""
_LOCK = threading.Lock()
_SESSION: list = []
"""The shared ONNX Runtime session once loading was tried ([None] when it failed)."""


def _session():
    with _LOCK:
        if not _SESSION:
            _SESSION.append(_load())
        return _SESSION[0]


def _load():
    try:
        import onnxruntime as ort

        from edgeasr.runtime.sessions import cpu_session_options
        from edgeasr.zoo.turn_assets import SILERO_VAD, fetch_asset

        return ort.InferenceSession(str(fetch_asset(SILERO_VAD)), cpu_session_options(1),
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # fail open: a missing second VAD must not stop transcription
        log.warning("vad: Silero VAD unavailable (%s: %s); using webrtcvad alone", type(exc).__name__, exc)
        return None


class SileroGate:
    """Streams audio through Silero and answers whether speech was heard shortly before a sample position."""

    def __init__(self, session, threshold: float, hold_ms: int) -> None:
        self._session, self.threshold = session, threshold
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros((1, CONTEXT), np.float32)
        self._buffer = np.zeros(0, np.float32)
        self._offset = 0
        """Start of the first unscored sample in `_buffer`."""
        self._scored = 0
        """Samples scored so far (whole windows since the first sample)."""
        self._heard: deque[bool] = deque(maxlen=max(1, -(-hold_ms * SAMPLE_RATE // 1000 // WINDOW)))
        """Per recent window: Silero's probability reached the threshold."""

    @classmethod
    def load(cls, threshold: float, hold_ms: int) -> "SileroGate | None":
        session = _session()
        return None if session is None else cls(session, threshold, hold_ms)

    def push(self, audio: np.ndarray) -> None:
        """Buffer audio; it is scored as `heard` asks for it."""
        rest = self._buffer[self._offset:]
        self._buffer = np.concatenate([rest, np.asarray(audio, np.float32)]) if rest.size else np.asarray(audio, np.float32)
        self._offset = 0

    def heard(self, until: int) -> bool:
        """Whether Silero heard speech in the last `hold_ms` before sample `until` (windows ending after it
        are left for later, so the answer for a frame never depends on how the audio was chunked)."""
        rate = np.array(SAMPLE_RATE, np.int64)
        while self._scored + WINDOW <= until and self._buffer.size - self._offset >= WINDOW:
            window = self._buffer[None, self._offset:self._offset + WINDOW]
            x = np.concatenate([self._context, window], axis=1)
            probability, self._state = self._session.run(None, {"input": x, "state": self._state, "sr": rate})
            self._context = x[:, -CONTEXT:]
            self._heard.append(float(probability[0, 0]) >= self.threshold)
            self._offset += WINDOW
            self._scored += WINDOW
        return any(self._heard)
