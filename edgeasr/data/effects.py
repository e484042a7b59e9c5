"""Deterministic signal operations that turn clean clips into harder ones (numpy only, 16 kHz mono).

Every random choice comes from the `numpy.random.Generator` the caller passes, so a set built twice
with the same seed is bit-identical. None of these try to be acoustically exact: they stand for the
conditions an edge device meets (a noisy room, a radio link, a reverberant hall, a fast or slow
talker) closely enough to show whether quantization holds up there.
"""

from __future__ import annotations

import numpy as np

from edgeasr.errors import DatasetError

RATE = 16_000


def read_clip(path: str) -> np.ndarray:
    """Samples of a built set's clip (16 kHz mono PCM16 wav) as float32."""
    import wave

    with wave.open(str(path)) as handle:
        if (handle.getframerate(), handle.getnchannels(), handle.getsampwidth()) != (RATE, 1, 2):
            raise DatasetError(f"{path} is not 16 kHz mono PCM16: build its source set again")
        pcm = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def join_with_pauses(parts: list[np.ndarray], rng: np.random.Generator, pause_s: tuple[float, float] = (0.3, 0.9),
                     edge_s: float = 0.2) -> np.ndarray:
    """Parts one after another with a natural pause (drawn from `pause_s`) between them and a short
    silence at both ends, as a reader leaves between sentences."""
    edge = np.zeros(int(edge_s * RATE), np.float32)
    pieces = [edge]
    for i, part in enumerate(parts):
        if i:
            pieces.append(np.zeros(int(rng.uniform(*pause_s) * RATE), np.float32))
        pieces.append(part.astype(np.float32, copy=False))
    pieces.append(edge)
    return np.concatenate(pieces)


def speech_power(x: np.ndarray, frame: int = 320) -> float:
    """Mean power over the frames that carry speech (within 30 dB of the loudest frame), so the
    pauses a clip holds do not lower the reference level of an SNR."""
    usable = x[: len(x) // frame * frame].reshape(-1, frame)
    if usable.size == 0:
        raise DatasetError("clip too short to measure its level")
    energy = (usable.astype(np.float64) ** 2).mean(axis=1)
    active = energy[energy >= energy.max() * 1e-3]
    return float(active.mean())


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n).astype(np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Noise whose power falls as 1/f (3 dB per octave), shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / RATE)
    spectrum /= np.sqrt(np.maximum(freqs, 20.0))  # flat below 20 Hz instead of an infinite DC term
    pink = np.fft.irfft(spectrum, n)
    return (pink / pink.std()).astype(np.float32)


def noise_excerpt(bed: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of a recorded noise bed from a random offset, looped when the bed is shorter."""
    if bed.size == 0:
        raise DatasetError("empty noise bed")
    start = int(rng.integers(0, bed.size))
    reps = -(-(start + n) // bed.size)
    return np.tile(bed, reps)[start:start + n]


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """speech + noise scaled to `snr_db` below the speech level; scaled down as a whole if it would clip."""
    noise = noise[: speech.size].astype(np.float64)
    gain = np.sqrt(speech_power(speech) / (10 ** (snr_db / 10)) / max(float((noise ** 2).mean()), 1e-12))
    mixed = speech + gain * noise
    peak = np.abs(mixed).max()
    return (mixed / peak * 0.95 if peak > 0.95 else mixed).astype(np.float32)


def room_response(rng: np.random.Generator, rt60_s: float, drr_db: float) -> np.ndarray:
    """A synthetic room impulse response: the direct path, a few ms of pre-delay, then exponentially
    decaying noise (60 dB down after `rt60_s`) whose energy sits `drr_db` below the direct path."""
    n = int(rt60_s * RATE)
    t = np.arange(n) / RATE
    tail = rng.standard_normal(n) * np.exp(-6.908 * t / rt60_s)
    tail[: int(0.003 * RATE)] = 0.0
    tail *= np.sqrt(10 ** (-drr_db / 10) / (tail ** 2).sum())
    tail[0] = 1.0
    return tail


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """`x` convolved with `rir` (FFT), trimmed to the clip plus its decay and brought back to `x`'s peak."""
    n = x.size + rir.size - 1
    size = 1 << (n - 1).bit_length()
    wet = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(rir, size), size)[:n]
    peak = np.abs(wet).max()
    return (wet / peak * min(np.abs(x).max(), 0.95)).astype(np.float32) if peak > 0 else wet.astype(np.float32)


def time_stretch(x: np.ndarray, speed: float, frame: int = 640, tolerance: int = 160) -> np.ndarray:
    """Play `x` `speed` times as fast with its pitch kept (WSOLA: overlap-add of windowed frames, each
    taken where it best continues the previous one within ±`tolerance` samples)."""
    if not 0.5 <= speed <= 2.0:
        raise DatasetError(f"speed {speed} outside 0.5-2.0")
    hop = frame // 2
    window = np.hanning(frame).astype(np.float64)
    padded = np.concatenate([np.zeros(frame + tolerance), x.astype(np.float64), np.zeros(2 * frame + tolerance)])
    n_out = int(len(x) / speed)
    out = np.zeros(n_out + 2 * frame)
    norm = np.zeros_like(out)
    prev = frame + tolerance  # padded index of the frame written last
    for k in range(n_out // hop + 1):
        nominal = frame + tolerance + int(round(k * hop * speed))
        if k == 0:
            pos = nominal
        else:
            # The natural continuation of the previous frame is what a frame at prev + hop would hold.
            target = padded[prev + hop: prev + hop + frame]
            region = padded[nominal - tolerance: nominal + tolerance + frame]
            pos = nominal - tolerance + int(np.argmax(np.correlate(region, target, mode="valid")))
        out[k * hop: k * hop + frame] += padded[pos: pos + frame] * window
        norm[k * hop: k * hop + frame] += window
        prev = pos
    out = out / np.maximum(norm, 1e-3)
    return out[:n_out].astype(np.float32)
