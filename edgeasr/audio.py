"""Audio in: load, resample, downmix and validate, so every model sees float32 16 kHz mono."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from edgeasr.errors import AudioError

SAMPLE_RATE = 16000


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a PCM wav file (8/16/24/32-bit, any channel count); other formats go through PyAV if installed."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"audio file {path} does not exist")
    try:
        with wave.open(str(path), "rb") as wav:
            rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
            raw = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError):
        return _load_with_av(path)
    if width == 3:
        bytes_ = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        ints = (bytes_[:, 0].astype(np.int32) | (bytes_[:, 1].astype(np.int32) << 8)
                | (bytes_[:, 2].astype(np.int8).astype(np.int32) << 16))
        data = ints.astype(np.float32) / 2**23
    elif width == 1:
        data = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    else:
        dtype = {2: np.int16, 4: np.int32}[width]
        data = np.frombuffer(raw, dtype).astype(np.float32) / float(np.iinfo(dtype).max + 1)
    return data.reshape(-1, channels), rate


def _load_with_av(path: Path) -> tuple[np.ndarray, int]:
    try:
        import av
    except ImportError:
        raise AudioError(f"{path} is not a PCM wav file; install PyAV (`pip install av`) to read other formats") from None
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        frames = [f.to_ndarray().reshape(-1) for frame in container.decode(stream) for f in resampler.resample(frame)]
    if not frames:
        raise AudioError(f"{path} holds no audio samples")
    return np.concatenate(frames)[:, None].astype(np.float32), rate


def prepare_audio(audio: np.ndarray | str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Return float32 mono 16 kHz audio; downmix channels, resample, and reject what cannot be transcribed.

    Accepts a path or an array shaped (samples,) or (samples, channels). Integer arrays are scaled to [-1, 1].
    """
    if isinstance(audio, (str, Path)):
        audio, sample_rate = load_audio(audio)
    audio = np.asarray(audio)
    if audio.dtype.kind in "iu":
        audio = audio.astype(np.float32) / float(np.iinfo(audio.dtype).max + 1)
    if audio.ndim == 2:
        if audio.shape[0] < audio.shape[1] and audio.shape[0] <= 8:
            audio = audio.T  # (channels, samples) as soundfile-style libraries often return
        audio = audio.mean(axis=1)
    if audio.ndim != 1:
        raise AudioError(f"audio must be 1-D or (samples, channels), got shape {audio.shape}")
    if audio.size == 0:
        raise AudioError("audio is empty: nothing to transcribe")
    audio = audio.astype(np.float32, copy=False)
    if not np.isfinite(audio).all():
        raise AudioError("audio contains NaN or infinite samples; clean the signal before transcribing")
    if sample_rate <= 0:
        raise AudioError(f"sample rate must be positive, got {sample_rate}")
    if sample_rate != SAMPLE_RATE:
        import soxr

        audio = soxr.resample(audio, sample_rate, SAMPLE_RATE).astype(np.float32)
    return audio


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write float audio in [-1, 1] as mono PCM16."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm.tobytes())


def split_on_silence(audio: np.ndarray, max_seconds: float, sample_rate: int = SAMPLE_RATE,
                     frame_ms: int = 30) -> list[tuple[int, int]]:
    """Cut audio longer than `max_seconds` into pieces, preferring the quietest frame near each limit.

    Returns (start, end) sample ranges covering the whole signal. Cutting at low energy keeps words whole,
    and pieces under the model window keep Whisper and Moonshine from hallucinating at the end.
    """
    limit = int(max_seconds * sample_rate)
    if audio.size <= limit:
        return [(0, audio.size)]
    frame = sample_rate * frame_ms // 1000
    pieces, start = [], 0
    while audio.size - start > limit:
        # Search the last third of the window for the quietest frame.
        lo, hi = start + limit * 2 // 3, start + limit - frame
        energies = [(float(np.mean(audio[i:i + frame] ** 2)), i) for i in range(lo, hi, frame // 2)]
        cut = min(energies)[1] + frame // 2
        pieces.append((start, cut))
        start = cut
    pieces.append((start, audio.size))
    return pieces


def voiced_seconds(audio: np.ndarray, aggressiveness: int = 2, frame_ms: int = 30) -> float:
    """Seconds of 16 kHz audio that webrtcvad calls speech (a whole-clip gate, not a streaming segmenter)."""
    import webrtcvad

    vad = webrtcvad.Vad(aggressiveness)
    frame = SAMPLE_RATE * frame_ms // 1000
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    voiced = sum(vad.is_speech(pcm[i:i + frame].tobytes(), SAMPLE_RATE)
                 for i in range(0, pcm.size - frame + 1, frame))
    return voiced * frame_ms / 1000
