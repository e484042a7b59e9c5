"""Engine on real audio: expected words, bad inputs, long audio, and the greedy loop vs transformers."""

import numpy as np
import pytest

from edgeasr.audio import SAMPLE_RATE, prepare_audio
from edgeasr.engine import Engine
from edgeasr.errors import AudioError, CacheCorruptedError, UnknownModelError
from edgeasr.metrics.wer import normalize
from edgeasr.registry import fetch_package, find_file
from edgeasr.zoo.catalog import MOONSHINE_VOICE

BECKETT = "ever tried ever failed no matter try again fail again fail better"
MODELS = ["moonshine-tiny", "moonshine-base", "whisper-tiny.en", "whisper-base"]


@pytest.fixture(scope="module")
def beckett_path():
    return find_file(fetch_package(MOONSHINE_VOICE), "assets/beckett.wav")


@pytest.fixture(scope="module")
def tiny():
    return Engine.load("moonshine-tiny")


@pytest.mark.parametrize("name", MODELS)
def test_beckett_words(name, beckett_path):
    text = normalize(Engine.load(name).transcribe(beckett_path).text)
    # base hears the first word as "never" (ctranslate2 does too); every other word must be right
    assert text.split()[1:] == BECKETT.split()[1:], text


def test_a_long_opening_pause_does_not_empty_moonshine_base(beckett_path):
    """moonshine-base itself decodes a clip behind a second or more of digital silence to nothing; the engine
    cuts the opening pause (as its VAD pre-roll does live) and hears every word."""
    engine = Engine.load("moonshine-base")
    padded = np.concatenate([np.zeros(2 * SAMPLE_RATE, np.float32), prepare_audio(beckett_path)])
    result, _, _ = engine.backend.run(padded)
    assert engine.backend.detokenize(result.tokens) == ""  # the failure the engine works around
    assert normalize(engine.transcribe(padded).text).split()[1:] == BECKETT.split()[1:]


def test_greedy_loop_matches_transformers_generate(beckett_path):
    import torch

    engine = Engine.load("whisper-tiny.en")
    backend = engine.backend
    audio = prepare_audio(beckett_path)
    features = backend.features(audio)
    with torch.inference_mode():
        reference = backend.model.generate(features, max_new_tokens=100).tolist()[0]
    ours = engine.transcribe(audio).tokens
    special = set(backend.settings.prompt) | {backend.settings.eos_id}
    assert ours == [t for t in reference if t not in special]


def test_resampling_and_stereo_give_the_same_words(tiny, beckett_path):
    import soxr

    audio = prepare_audio(beckett_path)
    at_44k = soxr.resample(audio, SAMPLE_RATE, 44100).astype(np.float32)
    stereo = np.stack([at_44k, at_44k], axis=1)
    assert normalize(tiny.transcribe(stereo, sample_rate=44100).text) == normalize(tiny.transcribe(audio).text)


@pytest.mark.parametrize("bad,message", [
    (np.zeros(0, np.float32), "empty"),
    (np.array([0.1, np.nan] * 8000, np.float32), "NaN"),
    (np.array([np.inf] * 16000, np.float32), "infinite"),
    (np.zeros((2, 2, 2), np.float32), "shape"),
])
def test_bad_audio_rejected_clearly(tiny, bad, message):
    with pytest.raises(AudioError, match=message):
        tiny.transcribe(bad)


def test_bad_sample_rate_and_missing_file(tiny, tmp_path):
    with pytest.raises(AudioError, match="sample rate"):
        tiny.transcribe(np.zeros(16000, np.float32), sample_rate=0)
    with pytest.raises(AudioError, match="no such file"):
        tiny.transcribe(tmp_path / "missing.wav")


def test_silence_and_low_noise_give_no_text(tiny):
    assert tiny.transcribe(np.zeros(5 * SAMPLE_RATE, np.float32)).text == ""
    noise = np.random.default_rng(0).normal(0, 0.003, 10 * SAMPLE_RATE).astype(np.float32)
    t = tiny.transcribe(noise)
    assert t.text == "" and all(s.dropped for s in t.segments)


def test_long_audio_is_segmented_not_hallucinated(tiny):
    root = fetch_package(MOONSHINE_VOICE)
    two_cities = prepare_audio(find_file(root, "assets/two_cities.wav"))
    t = tiny.transcribe(two_cities)
    assert len(t.segments) >= 3 and all(s.end - s.start <= 20.01 for s in t.segments)
    words = normalize(t.text).split()
    assert words[:6] == "it was the best of times".split() and words[-2:] == ["comparison", "only"]
    assert t.audio_seconds == pytest.approx(two_cities.size / SAMPLE_RATE)


def test_unknown_model_lists_known_names():
    with pytest.raises(UnknownModelError, match="moonshine-tiny"):
        Engine.load("no-such-model")


def test_corrupted_cache_is_detected_and_rebuilt(tmp_path, monkeypatch):
    import shutil

    from edgeasr.atomic import verify_dir
    from edgeasr.paths import cache_dir
    from edgeasr.zoo import fetch

    fetch("moonshine-tiny")
    # a private cache sharing the downloaded packages, so the real cache is never damaged
    packages = cache_dir("packages")
    monkeypatch.setenv("EDGEASR_CACHE", str(tmp_path))
    (tmp_path / "packages").symlink_to(packages)
    path = fetch("moonshine-tiny")
    with open(path / "model.safetensors", "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00" * 64)
    with pytest.raises(CacheCorruptedError):
        verify_dir(path)
    rebuilt = fetch("moonshine-tiny")
    verify_dir(rebuilt)
    shutil.rmtree(tmp_path / "models")
