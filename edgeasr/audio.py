"""Audio in: load, resample, downmix and validate, so every model sees float32 16 kHz mono."""

from __future__ import annotations

import io
import wave
from pathlib import Path
from typing import BinaryIO

import numpy as np

from edgeasr.errors import AudioError

SAMPLE_RATE = 16000
MIN_SAMPLES = SAMPLE_RATE * 30 // 1000
"""Shortest audio worth transcribing: one 30 ms VAD frame; anything shorter holds no word."""
LIVE_CHUNK_MS = 30
"""Audio per chunk the live front ends feed a streaming session: one webrtcvad frame, so an end-of-turn
decision waits at most one frame beyond its pause (100 ms chunks added ~45 ms to end of speech → final)."""
SEGMENTATION_REVISION = 2
"""How `split_on_silence` places the pieces a model decodes; sweep rows record it. 1 fed the audio's opening pause
whole; 2 (session 16) cuts an opening pause longer than half a second. Rows of 1 differ from 2 only on clips with
such an opening (`scripts/rescore_opening_pause.py` re-scores those clips)."""

# Leading bytes of common files that are not audio, so a renamed image or document gets a real reason.
_NOT_AUDIO = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
              b"%PDF": "a PDF document", b"PK\x03\x04": "a ZIP archive", b"\x7fELF": "an executable"}


def load_audio(source: str | Path | bytes, name: str | None = None) -> tuple[np.ndarray, int]:
    """Read audio as (samples, channels) float32 and its rate: PCM WAV (8/16/24/32-bit, any channel
    count) directly, other formats through PyAV when installed.

    `source` is a path or the file's bytes (an upload); `name` is how error messages call it (default:
    the path as given). Unreadable input raises AudioError naming the file and the real reason.
    """
    if isinstance(source, (bytes, bytearray)):
        data, name = bytes(source), name or "audio"
    else:
        path, name = Path(source), name or str(source)
        if not path.exists():
            raise AudioError(f"{name}: no such file")
        if path.is_dir():
            raise AudioError(f"{name}: is a directory, not an audio file")
        data = path.read_bytes()
    if not data:
        raise AudioError(f"{name}: empty file (0 bytes)")
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return _read_wav(data, name)
    kind = next((kind for magic, kind in _NOT_AUDIO.items() if data.startswith(magic)), None)
    if kind is None and _looks_like_text(data):
        kind = "a text file"
    if kind is not None:
        raise AudioError(f"{name}: {kind}, not audio")
    samples, rate = decode_with_av(io.BytesIO(data), name)
    return samples[:, None], rate


def _looks_like_text(data: bytes) -> bool:
    head = data[:4096]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a multi-byte character cut at the end of the sample
            return False
        text = head[:exc.start].decode("utf-8")
    return "\0" not in text and all(c.isprintable() or c.isspace() for c in text)


def _read_wav(data: bytes, name: str) -> tuple[np.ndarray, int]:
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
            raw = wav.readframes(wav.getnframes())
    except EOFError:
        raise AudioError(f"{name}: truncated WAV header") from None
    except wave.Error as exc:
        reason = str(exc)
        if reason.startswith("unknown format"):  # float, mu-law, ADPCM...: not PCM, FFmpeg reads them
            samples, rate = decode_with_av(io.BytesIO(data), name)
            return samples[:, None], rate
        reason = {"bad # of channels": "the WAV header declares 0 channels",
                  "bad sample width": "the WAV header declares a sample width of 0 bytes",
                  "fmt chunk and/or data chunk missing": "WAV file without a fmt or data chunk (truncated?)",
                  }.get(reason, f"unreadable WAV header ({reason})")
        raise AudioError(f"{name}: {reason}") from None
    if width not in (1, 2, 3, 4):
        raise AudioError(f"{name}: {8 * width}-bit PCM is not supported (8, 16, 24 or 32-bit are)")
    if rate <= 0:
        raise AudioError(f"{name}: the WAV header declares a sample rate of {rate} Hz")
    frames = len(raw) // (width * channels)
    if frames == 0:
        raise AudioError(f"{name}: a WAV header with no samples (0 frames of audio)")
    raw = raw[: frames * width * channels]  # a truncated last frame
    if width == 3:
        bytes_ = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        ints = (bytes_[:, 0].astype(np.int32) | (bytes_[:, 1].astype(np.int32) << 8)
                | (bytes_[:, 2].astype(np.int8).astype(np.int32) << 16))
        samples = ints.astype(np.float32) / 2**23
    elif width == 1:
        samples = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    else:
        dtype = {2: np.int16, 4: np.int32}[width]
        samples = np.frombuffer(raw, dtype).astype(np.float32) / float(np.iinfo(dtype).max + 1)
    return samples.reshape(-1, channels), rate


def decode_with_av(source: str | Path | BinaryIO, name: str, fmt: str | None = None) -> tuple[np.ndarray, int]:
    """Decode any container/codec FFmpeg knows to float32 mono at the file's own rate; `fmt` forces a demuxer.

    Errors name the file and say what FFmpeg found, never FFmpeg's own text with paths in it.
    """
    try:
        import av
    except ImportError:
        raise AudioError(f"{name}: not a PCM WAV file; install PyAV (`pip install av`) to read other formats") from None
    try:
        with av.open(source if not isinstance(source, Path) else str(source), format=fmt) as container:
            if not container.streams.audio:
                raise AudioError(f"{name}: no audio stream in this {container.format.name} file")
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate
            # Let FFmpeg do the channel downmix and sample-format conversion in one place.
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            chunks = [out.to_ndarray().reshape(-1)
                      for frame in container.decode(stream) for out in resampler.resample(frame)]
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    except av.error.FFmpegError as exc:
        reason = (exc.strerror or type(exc).__name__).rstrip(".")
        raise AudioError(f"{name}: not an audio file FFmpeg can read ({reason.lower()})") from None
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if samples.size == 0 or not rate:
        raise AudioError(f"{name}: holds no audio samples")
    return samples.astype(np.float32, copy=False), int(rate)


def prepare_audio(audio: np.ndarray | str | Path, sample_rate: int = SAMPLE_RATE, name: str | None = None) -> np.ndarray:
    """Return float32 mono 16 kHz audio; downmix channels, resample, and reject what cannot be transcribed.

    Accepts a path or an array shaped (samples,) or (samples, channels). Integer arrays are scaled to
    [-1, 1]. `name` prefixes error messages (default: the path, for a path). A file must hold at least
    MIN_SAMPLES; an array may be any length (live chunks are short).
    """
    from_file = isinstance(audio, (str, Path))
    if from_file:
        name = name or str(audio)
        audio, sample_rate = load_audio(audio, name)
    prefix = f"{name}: " if name else ""
    audio = np.asarray(audio)
    if audio.dtype.kind in "iu":
        audio = audio.astype(np.float32) / float(np.iinfo(audio.dtype).max + 1)
    if audio.ndim == 2:
        if audio.shape[0] < audio.shape[1] and audio.shape[0] <= 8:
            audio = audio.T  # (channels, samples) as soundfile-style libraries often return
        if audio.shape[1] == 0:
            raise AudioError(f"{prefix}audio has 0 channels")
        audio = audio.mean(axis=1)
    if audio.ndim != 1:
        raise AudioError(f"{prefix}audio must be 1-D or (samples, channels), got shape {audio.shape}")
    if audio.size == 0:
        raise AudioError(f"{prefix}audio is empty: nothing to transcribe")
    audio = audio.astype(np.float32, copy=False)
    if not np.isfinite(audio).all():
        raise AudioError(f"{prefix}audio contains NaN or infinite samples; clean the signal before transcribing")
    if sample_rate <= 0:
        raise AudioError(f"{prefix}sample rate must be positive, got {sample_rate}")
    if sample_rate != SAMPLE_RATE:
        import soxr

        audio = soxr.resample(audio, sample_rate, SAMPLE_RATE).astype(np.float32)
    if from_file:
        check_file_length(audio, name)
    return audio


def check_file_length(audio: np.ndarray, name: str) -> None:
    """A whole file (not a live chunk) shorter than MIN_SAMPLES at 16 kHz cannot hold a word: say so."""
    if audio.size < MIN_SAMPLES:
        raise AudioError(f"{name}: only {audio.size} sample{'s' * (audio.size != 1)} "
                         f"({1000 * audio.size / SAMPLE_RATE:.2f} ms at 16 kHz), too short to transcribe "
                         f"(at least {1000 * MIN_SAMPLES // SAMPLE_RATE} ms)")


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write float audio in [-1, 1] as mono PCM16."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm.tobytes())


def split_on_silence(audio: np.ndarray, max_seconds: float, sample_rate: int = SAMPLE_RATE,
                     frame_ms: int = 30, keep_pause_seconds: float = 0.2,
                     keep_opening_seconds: float = 0.5) -> list[tuple[int, int]]:
    """Cut audio longer than `max_seconds` into pieces, preferring the quietest frame near each limit.

    Returns (start, end) sample ranges in order. Cutting at low energy keeps words whole, and pieces under
    the model window keep Whisper and Moonshine from hallucinating at the end. The pause a cut falls in
    (frames within 10 dB of the quietest one) is not carried into the next piece beyond
    `keep_pause_seconds`: measured, moonshine-base decodes a piece that opens with 0.8 s of silence to
    nothing (a 23 s long-form item lost its last 24 words), and with 0.65 s or less it transcribes it.
    The audio's own opening pause is cut to `keep_opening_seconds` the same way, at every length: measured,
    moonshine-base (FP) decodes a long-form item behind 1.5 s of silence to nothing, and at W4A8 behind the
    1.26 s opening of `long18-asterisk` (`scripts/opening_silence_probe.py`); the live path's VAD never
    feeds more than its 0.3 s pre-roll. An opening is a pause when it is 20 dB under the median frame.
    So pieces cover all the audio except the middle of the pauses they were cut in and the start of a
    long opening pause.
    """
    limit = int(max_seconds * sample_rate)
    frame = sample_rate * frame_ms // 1000
    start = _opening_pause_end(audio, frame, limit, int(keep_opening_seconds * sample_rate))
    if audio.size - start <= limit:
        return [(start, audio.size)]
    keep = int(keep_pause_seconds * sample_rate)
    pieces = []
    while audio.size - start > limit:
        # Search the last third of the window for the quietest frame.
        lo, hi = start + limit * 2 // 3, start + limit - frame
        energies = [(float(np.mean(audio[i:i + frame] ** 2)), i) for i in range(lo, hi, frame // 2)]
        quietest, at = min(energies)
        cut = at + frame // 2
        pieces.append((start, cut))
        # A pause: within 10 dB of the quietest frame and 20 dB under the window's median frame, so steady
        # noise (or speech at a low SNR) never counts as one and no audio between pieces is dropped.
        median = float(np.median([e for e, _ in energies]))
        quiet = min(max(quietest, 1e-10) * 10.0, median * 0.01)
        resume = cut
        while resume + frame < audio.size and float(np.mean(audio[resume:resume + frame] ** 2)) <= quiet:
            resume += frame // 2
        start = max(cut, resume - keep)
    pieces.append((start, audio.size))
    return pieces


def _opening_pause_end(audio: np.ndarray, frame: int, window: int, keep: int) -> int:
    """Where the first piece starts: `keep` samples before the first frame of the opening window that is within
    20 dB of its median frame (0 when no frame is, as in all-silent or steady audio)."""
    n = min(audio.size, window) // frame
    if n == 0:
        return 0
    energies = (audio[:n * frame].astype(np.float64).reshape(n, frame) ** 2).mean(1)
    loud = np.flatnonzero(energies > np.median(energies) * 0.01)
    return max(0, int(loud[0]) * frame - keep) if loud.size else 0


def voiced_seconds(audio: np.ndarray, aggressiveness: int = 2, frame_ms: int = 30) -> float:
    """Seconds of 16 kHz audio that webrtcvad calls speech (a whole-clip gate, not a streaming segmenter)."""
    import webrtcvad

    vad = webrtcvad.Vad(aggressiveness)
    frame = SAMPLE_RATE * frame_ms // 1000
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    voiced = sum(vad.is_speech(pcm[i:i + frame].tobytes(), SAMPLE_RATE)
                 for i in range(0, pcm.size - frame + 1, frame))
    return voiced * frame_ms / 1000


def energy_spread_db(audio: np.ndarray, frame_ms: int = 20, band: tuple[float, float] = (300.0, 4000.0)) -> float:
    """How much the speech-band energy of 16 kHz audio varies over time: p90 − p10 of 20 ms frame energies, dB.

    Speech rises and falls by 20-40 dB between syllables and pauses; steady noise and tones stay within
    ~2.5 dB. Two readings, the smaller counts: raw band energy (a tone: 0 dB) and energy after
    dividing each frequency bin by its mean over time, which makes pink, brown and white noise look
    alike. Digital silence (frames 80 dB under the loudest) is left out. Fewer than two frames: 0.
    """
    frame = SAMPLE_RATE * frame_ms // 1000
    n = audio.size // frame
    if n < 2:
        return 0.0
    freqs = np.fft.rfftfreq(frame, 1 / SAMPLE_RATE)
    frames = audio[: n * frame].reshape(n, frame).astype(np.float64) * np.hanning(frame)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2)[:, (freqs >= band[0]) & (freqs <= band[1])]
    total = power.sum(axis=1)
    active = total > total.max() * 1e-8
    if active.sum() < 2:
        return 0.0
    power, total = power[active], total[active]
    whitened = (power / (power.mean(axis=0) + 1e-30)).mean(axis=1)

    def spread(energy: np.ndarray) -> float:
        db = 10 * np.log10(energy + 1e-30)
        return float(np.percentile(db, 90) - np.percentile(db, 10))

    return min(spread(total), spread(whitened))

