"""Audio front ends in numpy: Whisper's log-mel spectrogram and Moonshine's raw waveform.

The Whisper path reproduces `WhisperFeatureExtractor` (30 s window, 400-point periodic Hann STFT with
reflect padding, hop 160, power spectrum, the model's own mel filters stored in the bundle, log10 with
a floor at max − 8, then (x + 4) / 4), so a bundle sees exactly the features the torch model saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LogMelSettings:
    """What `WhisperFeatureExtractor` was configured with (read from the model's preprocessor config)."""

    n_fft: int = 400
    hop_length: int = 160
    chunk_samples: int = 480000
    """Audio is padded or cut to this many samples (30 s at 16 kHz)."""


def whisper_log_mel(audio: np.ndarray, filters: np.ndarray, settings: LogMelSettings) -> np.ndarray:
    """float32 [1, n_mels, frames] log-mel features of mono 16 kHz `audio`; `filters` is [n_freqs, n_mels]."""
    n = settings.chunk_samples
    waveform = np.zeros(n, np.float32)
    waveform[: min(n, audio.size)] = audio[:n]
    half = settings.n_fft // 2
    padded = np.pad(waveform, half, mode="reflect")
    n_frames = 1 + (padded.size - settings.n_fft) // settings.hop_length
    frames = np.lib.stride_tricks.as_strided(
        padded, (n_frames, settings.n_fft), (padded.strides[0] * settings.hop_length, padded.strides[0]))
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(settings.n_fft) / settings.n_fft)).astype(np.float32)
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    # The extractor drops the last STFT frame so 30 s gives exactly 3000 frames.
    mel = power[:-1].astype(np.float32) @ filters.astype(np.float32)
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).T[None].astype(np.float32)


def slaney_mel_filters(n_fft: int = 400, n_mels: int = 80, sample_rate: int = 16000) -> np.ndarray:
    """Whisper's mel filter bank [n_fft // 2 + 1, n_mels]: Slaney scale and area normalisation, 0 Hz to Nyquist.

    Bundles store their model's own filters; this builds them for models that ship none (Smart Turn).
    """
    def to_mel(hz: np.ndarray) -> np.ndarray:
        return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) * 27.0 / np.log(6.4), 3.0 * hz / 200.0)

    def to_hz(mel: np.ndarray) -> np.ndarray:
        return np.where(mel >= 15.0, 1000.0 * np.exp((mel - 15.0) * np.log(6.4) / 27.0), 200.0 * mel / 3.0)

    edges = to_hz(np.linspace(to_mel(np.array(0.0)), to_mel(np.array(sample_rate / 2)), n_mels + 2))
    freqs = np.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    slopes = edges[None, :] - freqs[:, None]
    down = -slopes[:, :-2] / np.diff(edges)[:-1]
    up = slopes[:, 2:] / np.diff(edges)[1:]
    filters = np.maximum(0.0, np.minimum(down, up)) * (2.0 / (edges[2:] - edges[:-2]))[None, :]
    return filters.astype(np.float32)


def moonshine_waveform(audio: np.ndarray) -> np.ndarray:
    """Moonshine reads the raw waveform (its extractor does not normalise): [1, samples] float32."""
    return np.ascontiguousarray(audio, dtype=np.float32)[None]
