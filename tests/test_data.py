"""Data sets: the Asterisk transcript cleaner on the real transcript file, offline builds, manifests."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import wave
from pathlib import Path

import pytest

from edgeasr.data import (BUILDERS, SETS, Utterance, build_dataset, clean_transcript, load_manifest, manifest_path,
                          write_manifest)
from edgeasr.data.asterisk import TEXT_PACKAGE, parse_transcripts
from edgeasr.data.debian import download_deb
from edgeasr.errors import DatasetError, PackageFetchError
from edgeasr.paths import ENV_VAR, cache_root

REAL_CACHE = cache_root()
"""The user's cache, captured before the fixtures below point EDGEASR_CACHE at fresh folders."""


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache root for built sets that reuses the real cache's downloaded wheels."""
    root = tmp_path_factory.mktemp("cache")
    packages = cache_root() / "packages"
    packages.mkdir(parents=True, exist_ok=True)
    (root / "packages").symlink_to(packages, target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_VAR, str(root))
        yield root


def _build_or_skip(name: str) -> Path:
    try:
        return build_dataset(name)
    except PackageFetchError as exc:
        pytest.skip(f"registry unreachable: {exc}")
    except DatasetError as exc:
        if "apt-get download" in str(exc):
            pytest.skip(f"Debian mirror unreachable: {exc}")
        raise


@pytest.fixture(scope="module")
def transcripts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    try:
        pkg = download_deb(TEXT_PACKAGE, tmp_path_factory.mktemp("deb"))
    except DatasetError as exc:
        pytest.skip(f"Debian mirror unreachable: {exc}")
    return parse_transcripts(next(pkg.root.rglob("core-sounds-en.txt.gz")))


@pytest.mark.parametrize(("key", "expected"), [
    ("hello-world", "Hello world."),
    ("spy-iax2", "IAX"),                                               # (note: ...)
    ("vm-intro", "Please leave your message after the tone. When done hang up or press the pound key."),
    ("letters/at", "at"),                                              # [@]
    ("letters/exclaimation-point", "exclamation point"),               # typo + [!]
    ("dictate/both_help", "press star to toggle pause, press pound to enter a new dictation filename"),
    ("confbridge-has-joined", "has joined the conference."),           # leading ...
    ("confbridge-leave-in", "To leave the conference"),                # trailing ...
    ("dir-multi2", "for"),
    ("digits/h-40", "fortieth"),
    ("unidentified-no-callback", "Unidentified or withheld and therefore cannot be called back."),
])
def test_cleaner_on_real_transcripts(transcripts: dict[str, str], key: str, expected: str) -> None:
    assert clean_transcript(transcripts[key]) == expected


@pytest.mark.parametrize("key", ["beep", "beeperr", "ascending-2tone", "tt-monkeys", "confbridge-join",
                                 "silence/1", "silence/10"])
def test_cleaner_drops_unspeakable_prompts(transcripts: dict[str, str], key: str) -> None:
    assert clean_transcript(transcripts[key]) is None


def test_cleaner_leaves_no_markup(transcripts: dict[str, str]) -> None:
    cleaned = [c for c in map(clean_transcript, transcripts.values()) if c]
    assert len(cleaned) == len(transcripts) - 17  # 10 silences, 5 [tones], 2 <beeps>
    for text in cleaned:
        assert not any(mark in text for mark in "[]()<>*#"), text
        assert "..." not in text and "  " not in text and text == text.strip()


def _check_wavs(utts: list[Utterance]) -> None:
    for utt in utts:
        with wave.open(utt.audio) as handle:
            assert (handle.getframerate(), handle.getnchannels(), handle.getsampwidth()) == (16000, 1, 2)
            assert handle.getnframes() / 16000 == pytest.approx(utt.seconds, abs=1e-3)
        assert utt.seconds > 0


def test_moonshine_samples(data_cache: Path) -> None:
    path = _build_or_skip("moonshine-samples")
    utts = load_manifest("moonshine-samples")
    assert [u.id for u in utts] == ["beckett", "two_cities"]
    assert utts[0].seconds == pytest.approx(10.0, abs=0.2) and utts[1].seconds == pytest.approx(44.4, abs=0.5)
    assert utts[1].text.endswith("in the superlative degree of comparison only.")
    _check_wavs(utts)
    assert build_dataset("moonshine-samples") == path  # cached: no rebuild


def test_asterisk_sets(data_cache: Path) -> None:
    _build_or_skip("asterisk-en")
    evaluation, calib = load_manifest("asterisk-en"), load_manifest("asterisk-en-calib")
    # FACTS: 553 prompts, ~24 min; 551 here because the two <beep> prompts hold no speech.
    assert 540 <= len(evaluation) + len(calib) <= 560
    assert 250 <= len(evaluation) <= 290
    assert 22 * 60 < sum(u.seconds for u in evaluation + calib) < 26 * 60
    assert all(len(u.text.split()) >= 3 for u in evaluation)
    assert all(len(u.text.split()) < 3 for u in calib)
    assert not {u.id for u in evaluation} & {u.id for u in calib}
    _check_wavs(evaluation[:20] + calib[:20])


def test_missing_set_says_how_to_build(data_cache: Path) -> None:
    with pytest.raises(DatasetError, match="edgeasr data build codec2-calib"):
        load_manifest("codec2-calib")
    with pytest.raises(DatasetError, match="unknown data set"):
        load_manifest("no-such-set")
    with pytest.raises(DatasetError, match="unknown data set"):
        build_dataset("no-such-set")


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="datasets is installed")
def test_hub_sets_explain_without_datasets(data_cache: Path) -> None:
    assert "librispeech-clean" in BUILDERS
    with pytest.raises(DatasetError, match="Hugging Face Hub"):
        build_dataset("librispeech-clean")


def test_manifest_path_round_trip(tmp_path: Path) -> None:
    clip = tmp_path / "clips" / "a.wav"
    clip.parent.mkdir()
    with wave.open(str(clip), "wb") as handle:
        handle.setnchannels(1), handle.setsampwidth(2), handle.setframerate(16000)
        handle.writeframes(b"\0\0" * 1600)
    path = write_manifest(tmp_path / "set" / "m.jsonl", [
        Utterance("a", str(clip), "hello", 0.1, "test"), Utterance("b", str(clip), None, 0.1, "test")])
    assert json.loads(path.read_text().splitlines()[0])["audio"] == "../clips/a.wav"
    utts = load_manifest(path)
    assert [u.text for u in utts] == ["hello", None]
    assert Path(utts[0].audio) == clip.resolve()
    assert len(load_manifest(str(path), limit=1)) == 1
    with pytest.raises(DatasetError, match="does not exist"):
        load_manifest(tmp_path / "missing.jsonl")
    path.write_text('{"id": "x"}\n')
    with pytest.raises(DatasetError, match="malformed"):
        load_manifest(path)


NEW_SETS = ("longform-en", "noisy-en-20db", "noisy-en-10db", "reverb-en", "reverb-en-192", "speed-en", "tts-en-calib",
            "calib-mix")


@pytest.fixture(scope="module")
def derived_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache whose source sets are links to the real cache's (built there first if missing)."""
    sources = ("asterisk-en", "asterisk-en-calib", "tts-en", "codec2-calib")
    root = tmp_path_factory.mktemp("derived")
    (root / "data").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_VAR, str(REAL_CACHE))
        for name in sources:
            _build_or_skip(name)
        for name in sources:
            (root / "data" / name).symlink_to(REAL_CACHE / "data" / name, target_is_directory=True)
        mp.setenv(ENV_VAR, str(root))
        yield root


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW_SETS)
def test_new_sets_build_deterministically(derived_cache: Path, name: str) -> None:
    def digest() -> str:
        return hashlib.sha256((derived_cache / "data" / name / "MANIFEST.json").read_bytes()).hexdigest()

    if name == "calib-mix":
        build_dataset("tts-en-calib")
    build_dataset(name)
    first = digest()
    build_dataset(name, force=True)
    assert digest() == first  # every clip and the manifest bit-identical
    utts = load_manifest(name)
    _check_wavs(utts)
    assert name in SETS and SETS[name]


def test_new_sets_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """What each derived set promises: lengths, conditions, and calibration disjoint from evaluation."""
    monkeypatch.setenv(ENV_VAR, str(REAL_CACHE))
    for name in NEW_SETS:
        if not manifest_path(name).is_file():
            pytest.skip(f"{name} not built (edgeasr data build {name})")
    long = load_manifest("longform-en")
    assert len(long) == 40 and all(5.0 <= u.seconds <= 26.0 for u in long)
    assert sum(u.seconds >= 15 for u in long) >= 10  # the 15-25 s range where decoders ended early
    for snr in (20, 10):
        ids = [u.id for u in load_manifest(f"noisy-en-{snr}db")]
        assert len(ids) == 48 and {i.rsplit("-", 1)[1] for i in ids} == {f"white{snr}", f"pink{snr}", f"radio{snr}"}
    speed = load_manifest("speed-en")
    assert len(speed) == 48 and speed[0].text == speed[1].text
    assert speed[0].seconds / speed[1].seconds == pytest.approx(1.1 / 0.9, rel=0.02)
    mix = load_manifest("calib-mix")
    parts = {p for u in mix for p in u.source.split(" + ")}
    assert not parts & {u.id for u in load_manifest("asterisk-en")}
    tts_eval = {u.text for u in load_manifest("tts-en")}
    assert not any(t in (u.text or "") for u in mix for t in tts_eval)
    assert max(u.seconds for u in mix) > 15 and min(u.seconds for u in mix) < 5
    assert any("db" in u.id for u in mix) and any("codec2" in u.id for u in mix)


def test_manifest_does_not_import_builders() -> None:
    """No circle: the manifest reader names known sets from the plain catalogue, not the builder registry."""
    import ast

    import edgeasr.data.manifest as manifest

    tree = ast.parse(Path(manifest.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in imported if m and m.startswith("edgeasr.data")} == {"edgeasr.data.sets"}
