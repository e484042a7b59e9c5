"""End of turn: at a short pause, does the speaker's sentence sound finished? Smart Turn v3.2 on ONNX Runtime.

webrtcvad only hears sound or silence, so without this the session waits its whole hangover (600 ms)
after every line. Smart Turn (a Whisper-tiny-encoder classifier, BSD-2-Clause) reads the prosody and
words of the line's last 8 s and returns P(turn complete). The session scores the open line once a pause
reaches `TurnOptions.pause_ms`: at or above `threshold` (and with a speculative final that closes a
sentence) the line completes at once; below, the line stays open until the VAD hangover, which acts as
the cap. The score runs on a worker thread beside the speculative final decode (`SmartTurn.submit`).

Runs with onnxruntime and numpy only (the torch-free edge profile). The model is loaded once per process
and shared by every session (ONNX Runtime sessions may run from several threads). Fail open: when the
model cannot be fetched or loaded, sessions fall back to the hangover and one warning is logged.
"""

from __future__ import annotations

import logging
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeasr.audio import SAMPLE_RATE
from edgeasr.runtime.features import LogMelSettings, slaney_mel_filters, whisper_log_mel
from edgeasr.runtime.sessions import cpu_session_options

log = logging.getLogger(__name__)

END_OF_TURN_MODES = ("smart", "vad")
WINDOW_SECONDS = 8
_SETTINGS = LogMelSettings(chunk_samples=WINDOW_SECONDS * SAMPLE_RATE)


@dataclass(frozen=True)
class TurnOptions:
    """How a pause is judged to end the speaker's turn."""

    mode: str = "vad"
    """"smart": Smart Turn scores each pause of `pause_ms`; "vad": only the VAD hangover ends a line (the
    default until smart meets its goal in `edgeasr bench stream --end-of-turn vad smart`)."""
    pause_ms: int = 30
    """Silence after the last voiced frame before the open line is scored: one VAD frame. The speculative final
    starts at the same pause (its audio padded with silence to `SessionOptions.final_pad_ms`), so the score
    and the decode run side by side and the decision waits for no more audio."""
    threshold: float = 0.9
    """P(turn complete) at or above which the line completes at once. Smart Turn's own cut-off is 0.5. Tuned
    with the text gate on clips the reported bench does not use (`build_replay(48, skip=24)`, moonshine-tiny
    W4, 30 ms chunks): at a 30 ms pause 0.9 split 1 of 24 paused sentences (0.8: 3) and ended 27 of 48
    sentence ends early (0.95: 23, median back at the hangover); see docs/turn-taking.md."""
    model_path: str | None = None
    """A local Smart Turn ONNX file; None = the pinned v3.2, extracted into the cache on first use."""
    threads: int = 1
    """ONNX Runtime intra-op threads per score (the decodes keep the other cores)."""
    text_gate: bool = True
    """An early end also needs the line's text (its speculative final) to close a sentence with . ? or !:
    Smart Turn hears prosody only, and a phrase-final fall before a comma sounds finished to it."""

    def __post_init__(self) -> None:
        if self.mode not in END_OF_TURN_MODES:
            raise ValueError(f"end of turn must be one of {END_OF_TURN_MODES}, got {self.mode!r}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"turn threshold must be between 0 and 1, got {self.threshold}")
        if self.pause_ms < 30:
            raise ValueError(f"turn pause must be at least one VAD frame (30 ms), got {self.pause_ms}")


def turn_features(audio: np.ndarray) -> np.ndarray:
    """Smart Turn's input [1, 80, 800]: the last 8 s, zero-padded at the front, normalised, Whisper log-mel."""
    n = _SETTINGS.chunk_samples
    window = np.zeros(n, np.float32)
    tail = np.asarray(audio, np.float32)[-n:]
    window[n - tail.size:] = tail
    # Normalised over the whole window, padding included, as the model was trained (transformers' do_normalize).
    window = (window - window.mean()) / np.sqrt(window.var() + 1e-7)
    return whisper_log_mel(window, _filters(), _SETTINGS)


_FILTERS: list[np.ndarray] = []


_SENTENCE_END = re.compile(r"[.?!][\"')\]]*$")


def closes_sentence(text: str) -> bool:
    """True when `text` ends with sentence punctuation (both families punctuate their output)."""
    return bool(_SENTENCE_END.search(text.strip()))


def _filters() -> np.ndarray:
    if not _FILTERS:
        _FILTERS.append(slaney_mel_filters(_SETTINGS.n_fft, 80, SAMPLE_RATE))
    return _FILTERS[0]


class SmartTurn:
    """Smart Turn's ONNX graph: `score(audio)` → P(the turn ends here)."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), cpu_session_options(threads), providers=["CPUExecutionProvider"])
        names = [i.name for i in self.session.get_inputs()]
        if names != ["input_features"]:
            raise ValueError(f"{path} is not a Smart Turn v3 graph: inputs {names}, expected ['input_features']")
        # Scores run beside the speculative final decode (ONNX Runtime releases the GIL), so the end
        # decision costs the longer of the two, not their sum. Two workers: sessions of one process share them.
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="smart-turn")

    def score(self, audio: np.ndarray) -> float:
        """P(turn complete) for a line's 16 kHz audio up to now (its trailing pause included)."""
        return float(self.session.run(None, {"input_features": turn_features(audio)})[0].reshape(-1)[0])

    def submit(self, audio: np.ndarray) -> Future:
        """`score(audio)` on a worker thread, so the caller can decode meanwhile."""
        return self._pool.submit(self.score, audio)


_LOADED: dict[tuple[str | None, int], SmartTurn | None] = {}
_LOCK = threading.Lock()


def load_turn_model(options: TurnOptions) -> SmartTurn | None:
    """The shared Smart Turn model for `options`, or None (with one warning per process) when it cannot load."""
    if options.mode != "smart":
        return None
    key = (options.model_path, options.threads)
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load(options)
        return _LOADED[key]


def _load(options: TurnOptions) -> SmartTurn | None:
    try:
        if options.model_path is not None:
            path = Path(options.model_path).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"no Smart Turn model at {path}")
        else:
            from edgeasr.zoo.turn_assets import SMART_TURN, fetch_asset

            path = fetch_asset(SMART_TURN)
        return SmartTurn(path, options.threads)
    except Exception as exc:  # fail open: a missing end-of-turn model must not stop transcription
        log.warning("end of turn: Smart Turn unavailable (%s: %s); lines end after the VAD hangover instead",
                    type(exc).__name__, exc)
        return None
