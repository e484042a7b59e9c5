"""Shared test fixtures (real speech clips from a registry package, downloaded once) and the test tiers."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

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


# ---- test tiers -----------------------------------------------------------------------------------
# `make check` runs `pytest -m "not slow"`: tests that need no model, no data set and no network.
# A test is `slow` when it is marked so, or when anything it runs from the test code (its body, the
# fixtures it uses, the test helpers they call, followed transitively) loads a model, builds a data set
# or names a zoo model. `make check` also runs with an empty cache and no package index, so a test
# this walk misses fails loudly there instead of downloading.
MODEL_USE = re.compile(
    r"\b(fetch|fetch_package|build_dataset|load_manifest|quantize|quantize_to_checkpoint|load_or_quantize"
    r"|from_pretrained|export_bundle|held_out_clips)\(|Engine\.load\b|edgeasr-listen|edgeasr-server"
    r"|[\"'](moonshine|whisper)-(tiny|base|small)")
MODEL_NAME = re.compile(r"(moonshine|whisper)-(tiny|base|small)")
"""A module constant naming a zoo model (`MODEL = "moonshine-tiny"`) counts as using it."""
TESTS_DIR = Path(__file__).resolve().parent


def _uses_models(func, seen: set) -> bool:
    """Whether `func` (a test, fixture or helper defined under tests/) or anything it calls there uses a model."""
    func = inspect.unwrap(func)
    code = getattr(func, "__code__", None)
    if code is None or code in seen or not Path(code.co_filename).resolve().is_relative_to(TESTS_DIR):
        return False
    seen.add(code)
    try:
        if MODEL_USE.search(inspect.getsource(func)):
            return True
    except (OSError, TypeError):
        return False
    names, stack = set(), [code]
    while stack:  # names used by the function and by the functions/lambdas nested in it
        current = stack.pop()
        names.update(current.co_names)
        stack.extend(c for c in current.co_consts if inspect.iscode(c))
    targets = [func.__globals__.get(name) for name in names]
    return any(MODEL_NAME.match(t) if isinstance(t, str) else callable(t) and _uses_models(t, seen) for t in targets)


def _fixture_functions(item: pytest.Function) -> list:
    """The functions behind the fixtures `item` requests, found where pytest finds ours: the test's module
    (its own fixtures and those it imports) overrides this conftest. pytest's own fixtures (tmp_path, ...)
    are not found here and live outside tests/, so they never count."""
    scopes = (vars(item.module), globals())
    return [next((scope[name] for scope in scopes if name in scope), None) for name in item.fixturenames]


def pytest_collection_modifyitems(config, items) -> None:
    slow = pytest.mark.slow
    for item in items:
        if item.get_closest_marker("slow"):
            continue
        seen: set = set()
        if any(_uses_models(f, seen) for f in [item.function, *_fixture_functions(item)]):
            item.add_marker(slow)
