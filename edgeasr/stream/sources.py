"""Audio sources for a streaming session; each yields float32 16 kHz mono chunks.

`MicSource` records with sounddevice; its PortAudio callback never blocks: chunks go into a bounded
queue and a chunk that finds the queue full is dropped and counted in `overflows`, so a slow model
loses audio visibly instead of stalling the sound card. `FileSource` replays a file as if it were
the microphone (at real-time speed) or as fast as possible; `ArraySource` does the same for arrays.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgeasr.audio import LIVE_CHUNK_MS, SAMPLE_RATE, prepare_audio
from edgeasr.errors import EdgeASRError

log = logging.getLogger(__name__)


class NoMicrophoneError(EdgeASRError):
    """No audio input: PortAudio is missing or no input device exists."""


def _sounddevice():
    try:
        import sounddevice
    except OSError as exc:  # sounddevice raises OSError when it cannot load libportaudio
        raise NoMicrophoneError(
            f"cannot record: {exc}. Install PortAudio (Debian/Raspberry Pi OS: `sudo apt-get install "
            "libportaudio2`), or replay a file with `--file clip.wav`") from None
    return sounddevice


def list_input_devices() -> list[dict]:
    """Input devices PortAudio sees: index, name, channels and default sample rate."""
    sd = _sounddevice()
    return [{"index": i, "name": d["name"], "channels": d["max_input_channels"],
             "sample_rate": d["default_samplerate"]}
            for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]


class ArraySource:
    """Yields an array in chunks, optionally paced at real-time speed."""

    def __init__(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, chunk_ms: int = LIVE_CHUNK_MS,
                 realtime: bool = False) -> None:
        self.audio = prepare_audio(audio, sample_rate)
        self.chunk = SAMPLE_RATE * chunk_ms // 1000
        self.realtime = realtime

    @property
    def seconds(self) -> float:
        return self.audio.size / SAMPLE_RATE

    def __iter__(self) -> Iterator[np.ndarray]:
        start = time.monotonic()
        for i in range(0, self.audio.size, self.chunk):
            if self.realtime:
                # Pace against the start time, not chunk by chunk, so sleeps never accumulate drift.
                delay = start + (i + self.chunk) / SAMPLE_RATE - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            yield self.audio[i:i + self.chunk]


class FileSource(ArraySource):
    """Replays an audio file (any format `edgeasr.audio.load_audio` reads) as if it were the microphone."""

    def __init__(self, path: str | Path, chunk_ms: int = LIVE_CHUNK_MS, realtime: bool = True) -> None:
        super().__init__(prepare_audio(path), SAMPLE_RATE, chunk_ms, realtime)
        self.path = Path(path)


class MicSource:
    """Records from an input device (index, name substring, or the default) until closed.

    Use as a context manager; iterate to get 16 kHz chunks. The device records at its native rate and
    a streaming resampler converts, since many USB microphones offer only 44.1 or 48 kHz.
    """

    def __init__(self, device: int | str | None = None, chunk_ms: int = LIVE_CHUNK_MS,
                 queue_seconds: float = 5.0) -> None:
        self.device = device
        self.chunk_ms = chunk_ms
        self.overflows = 0
        """Chunks dropped because the consumer fell `queue_seconds` behind."""
        self.input_overflows = 0
        """Callbacks where PortAudio itself reported lost input."""
        self.sample_rate = SAMPLE_RATE
        self._queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=max(1, round(1000 * queue_seconds / chunk_ms)))
        self._stream = None

    def callback(self, indata: np.ndarray, frames: int, time_info, status) -> None:
        """PortAudio's audio-thread callback: copy the first channel and enqueue it without blocking."""
        if status and getattr(status, "input_overflow", False):
            self.input_overflows += 1
        try:
            self._queue.put_nowait(np.array(indata[:, 0], dtype=np.float32))
        except queue.Full:
            self.overflows += 1

    def open(self) -> "MicSource":
        sd = _sounddevice()
        try:
            info = sd.query_devices(self.device, "input")
        except (ValueError, sd.PortAudioError) as exc:
            raise NoMicrophoneError(
                f"no audio input device ({exc}); connect a microphone, pick one from "
                "`edgeasr-listen --list-devices` with --device, or replay a file with --file") from None
        self.sample_rate = int(info["default_samplerate"])
        try:
            self._stream = sd.InputStream(device=self.device, channels=1, dtype="float32",
                                          samplerate=self.sample_rate, callback=self.callback,
                                          blocksize=self.sample_rate * self.chunk_ms // 1000)
            self._stream.start()
        except sd.PortAudioError as exc:
            raise NoMicrophoneError(f"cannot open input device {info['name']!r}: {exc}") from None
        log.info("recording from %s at %d Hz", info["name"], self.sample_rate)
        return self

    def close(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None
        if self.overflows or self.input_overflows:
            log.warning("lost audio: %d chunks dropped (consumer too slow), %d device overflows",
                        self.overflows, self.input_overflows)

    def __enter__(self) -> "MicSource":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def chunks(self, timeout: float = 1.0) -> Iterator[np.ndarray]:
        """Yield queued chunks resampled to 16 kHz; stops when the stream is closed and drained."""
        import soxr

        resampler = None
        if self.sample_rate != SAMPLE_RATE:
            resampler = soxr.ResampleStream(self.sample_rate, SAMPLE_RATE, 1, dtype="float32")
        while self._stream is not None or not self._queue.empty():
            try:
                chunk = self._queue.get(timeout=timeout)
            except queue.Empty:
                continue
            yield resampler.resample_chunk(chunk) if resampler is not None else chunk

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.chunks()
