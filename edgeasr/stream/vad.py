"""Voice activity: webrtcvad frames turned into speech start / end decisions with pre-roll and hangover.

With `kind="silero"` a frame is voiced only when Silero VAD agrees (`edgeasr.stream.silero`): it keeps
HF-radio static, which webrtcvad passes, from opening lines.

The segmenter only decides *where* speech is (sample positions since the first sample it saw); the
session keeps the audio and decides what to decode.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from edgeasr.audio import SAMPLE_RATE
from edgeasr.stream.silero import SileroGate

VAD_KINDS = ("webrtc", "silero")

@dataclass(frozen=True)
class VADOptions:
    """How webrtcvad frames become speech segments."""

    aggressiveness: int = 2
    """webrtcvad mode 0 (keeps most audio) to 3 (drops most non-speech)."""
    frame_ms: int = 30
    """webrtcvad frame length: 10, 20 or 30 ms."""
    start_frames: int = 3
    """Consecutive voiced frames needed to declare speech (filters clicks)."""
    hangover_ms: int = 600
    """Unvoiced time after the last voiced frame before speech is declared over. Shorter answers sooner
    but splits sentences at breaths, and each line is decoded without the previous one's context
    (moonshine-tiny, tests/test_stream.py replay: 400 ms 7.95 % WER, 600 ms 3.98 %, 800 ms 2.84 % = offline)."""
    pre_roll_ms: int = 300
    """Audio kept before the first voiced frame so soft word onsets are not cut."""
    kind: str = "webrtc"
    """"webrtc": webrtcvad alone; "silero": a frame is voiced only when Silero VAD also heard speech (fewer
    words invented on radio noise; see docs/streaming.md). Falls back to webrtcvad if Silero cannot load."""
    silero_threshold: float = 0.5
    """Silero's speech probability at or above which a 32 ms window counts as speech (its own default)."""
    silero_hold_ms: int = 100
    """A webrtcvad frame passes while Silero heard speech this recently (bridges Silero's short dips)."""

    def __post_init__(self) -> None:
        if self.kind not in VAD_KINDS:
            raise ValueError(f"VAD kind must be one of {VAD_KINDS}, got {self.kind!r}")
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"VAD aggressiveness must be 0-3, got {self.aggressiveness}")
        if self.frame_ms not in (10, 20, 30):
            raise ValueError(f"webrtcvad frames must be 10, 20 or 30 ms, got {self.frame_ms}")
        if self.start_frames < 1:
            raise ValueError("start_frames must be at least 1")


@dataclass(frozen=True)
class SpeechStart:
    """Speech began; `start` includes the pre-roll."""

    start: int


@dataclass(frozen=True)
class SpeechEnd:
    """Speech ended at `end` (end of the last voiced frame); decided at `decided_at` after the hangover."""

    end: int
    decided_at: int
    voiced: int
    """Voiced samples in the segment that ended."""


VADEvent = SpeechStart | SpeechEnd


class VADSegmenter:
    """Feeds float32 16 kHz audio of any chunk size through webrtcvad, one frame at a time."""

    def __init__(self, options: VADOptions | None = None) -> None:
        import webrtcvad

        self.options = options or VADOptions()
        self.frame = SAMPLE_RATE * self.options.frame_ms // 1000
        self._vad = webrtcvad.Vad(self.options.aggressiveness)
        self._silero = (SileroGate.load(self.options.silero_threshold, self.options.silero_hold_ms)
                        if self.options.kind == "silero" else None)
        self._pending = np.zeros(0, np.float32)
        self.position = 0
        """Samples consumed by whole frames so far."""
        self.in_speech = False
        self.last_voiced_end = 0
        """End sample of the most recent voiced frame (meaningful while in speech)."""
        self.voiced_samples = 0
        """Voiced samples in the current speech segment."""
        self._run: deque[int] = deque(maxlen=self.options.start_frames)
        self._last_end = 0
        # Frame start and voiced flag of recent frames, so a cut can be placed in a pause.
        self.recent: deque[tuple[int, bool]] = deque(maxlen=max(1, 2000 // self.options.frame_ms))

    @property
    def trailing_silence(self) -> int:
        """Unvoiced samples since the last voiced frame while in speech (0 otherwise)."""
        return self.position - self.last_voiced_end if self.in_speech else 0

    def push(self, audio: np.ndarray) -> list[VADEvent]:
        """Consume audio; return the speech starts and ends decided by whole frames inside it."""
        if self._silero is not None:
            self._silero.push(audio)
        data = np.concatenate([self._pending, audio]) if self._pending.size else audio
        n_frames = data.size // self.frame
        self._pending = data[n_frames * self.frame:].copy()
        pcm = (np.clip(data[: n_frames * self.frame], -1.0, 1.0) * 32767).astype("<i2")
        events: list[VADEvent] = []
        for i in range(n_frames):
            frame = pcm[i * self.frame:(i + 1) * self.frame]
            voiced = self._vad.is_speech(frame.tobytes(), SAMPLE_RATE)
            if voiced and self._silero is not None:
                voiced = self._silero.heard(self.position + self.frame)
            event = self._step(voiced)
            if event is not None:
                events.append(event)
        return events

    def _step(self, voiced: bool) -> VADEvent | None:
        start, self.position = self.position, self.position + self.frame
        self.recent.append((start, voiced))
        if not self.in_speech:
            if voiced:
                self._run.append(start)
            else:
                self._run.clear()
            if len(self._run) < self.options.start_frames:
                return None
            self.in_speech, self.last_voiced_end = True, self.position
            self.voiced_samples = self.frame * self.options.start_frames
            onset = self._run[0] - SAMPLE_RATE * self.options.pre_roll_ms // 1000
            self._run.clear()
            # Pre-roll never reaches back into the previous segment.
            return SpeechStart(max(onset, self._last_end, 0))
        if voiced:
            self.last_voiced_end = self.position
            self.voiced_samples += self.frame
            return None
        if self.position - self.last_voiced_end >= SAMPLE_RATE * self.options.hangover_ms // 1000:
            return self.force_end(self.last_voiced_end)
        return None

    def force_end(self, end: int) -> SpeechEnd:
        """End the current segment at `end` (after the hangover, or because the stream ends)."""
        self.in_speech = False
        self._last_end = end
        self._run.clear()
        return SpeechEnd(end, self.position, self.voiced_samples)

    def quiet_point(self, after: int) -> int | None:
        """Start of the latest unvoiced frame after sample `after`, if the recent frames hold one."""
        for start, voiced in reversed(self.recent):
            if start <= after:
                break
            if not voiced:
                return start
        return None
