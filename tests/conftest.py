"""Shared test fixtures: real speech clips from a registry package (downloaded once, then cached)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeasr.audio import SAMPLE_RATE, prepare_audio, split_on_silence
from edgeasr.registry import fetch_package, find_file
from edgeasr.zoo.catalog import MOONSHINE_VOICE


@pytest.fixture(scope="session")
def speech_clips() -> dict[str, np.ndarray]:
    """Human speech as float32 16 kHz mono: beckett (10 s) and two_cities (44 s at 48 kHz, resampled)
    cut at quiet points into pieces of at most 25 s, so each fits Whisper's 30 s window."""
    root = fetch_package(MOONSHINE_VOICE)
    clips = {"beckett": prepare_audio(find_file(root, "assets/beckett.wav"))}
    two_cities = prepare_audio(find_file(root, "assets/two_cities.wav"))
    for i, (start, end) in enumerate(split_on_silence(two_cities, 25.0)):
        clips[f"two_cities_{i}"] = two_cities[start:end]
    assert all(c.dtype == np.float32 and 1 * SAMPLE_RATE < c.size <= 25 * SAMPLE_RATE for c in clips.values())
    return clips
