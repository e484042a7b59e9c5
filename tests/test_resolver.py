"""The resolver: what a user names → an Engine on the packed bundle (exported once, found again by the
recipe it records), torch only where no bundle represents the recipe or when asked; damaged bundles are
refused. Real models and real speech; the cache-reuse checks compare bundle paths and content hashes."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeasr import resolver
from edgeasr.errors import CheckpointError, EdgeASRError, QuantizationError
from edgeasr.metrics.wer import utterance_wer
from edgeasr.quant.recipe import Recipe
from edgeasr.resolver import ResolveOptions, bundle_path, parse_target, resolve
from edgeasr.runtime.bundle import META

MODEL = "moonshine-tiny"
W4 = Recipe(MODEL, "rtn", 4)
BECKETT = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."


def _close_to_beckett(text: str, limit: float = 0.15) -> bool:
    return utterance_wer(BECKETT, text).wer <= limit


@pytest.fixture(scope="module")
def w4_engine():
    """The W4 recipe resolved through the real cache (quantized and exported on the first run ever)."""
    return resolve(W4)


@pytest.fixture
def private_bundles(tmp_path, monkeypatch, w4_engine) -> Path:
    """A bundle cache of its own holding a copy of the W4 bundle (checkpoints and models stay shared), so a
    test may damage, rename or archive it without touching the real cache."""
    import edgeasr.paths

    real = edgeasr.paths.cache_dir
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    private = lambda kind: bundles if kind == "bundles" else real(kind)  # noqa: E731
    monkeypatch.setattr(resolver, "cache_dir", private)
    monkeypatch.setattr(edgeasr.paths, "cache_dir", private)  # where the runtime extracts archives
    shutil.copytree(w4_engine.backend.meta.directory, bundles / "copy")
    return bundles


@pytest.mark.slow
def test_a_recipe_runs_on_its_bundle_and_the_second_resolve_reuses_it(w4_engine, speech_clips, monkeypatch):
    info = w4_engine.describe()
    assert info["engine"] == "bundle" and info["backend"] == "onnx" and "engine_reason" not in info
    assert w4_engine.name == W4.label
    assert _close_to_beckett(w4_engine.transcribe(speech_clips["beckett"]).text)
    # The bundle records the recipe and the export settings it was found by, and where it came from.
    directory = w4_engine.backend.meta.directory
    recorded = json.loads((directory / META).read_text())
    assert Recipe.from_dict(recorded["recipe"]) == W4
    provenance = json.loads((directory / resolver.PROVENANCE).read_text())
    checkpoint_meta = json.loads((resolver.cache_dir("checkpoints") / W4.label / "quant.json").read_text())
    assert provenance["source_sha256"] == checkpoint_meta["sha256"]

    def no_export(*args, **kwargs):
        raise AssertionError("the second resolve exported again")

    monkeypatch.setattr(resolver, "_export", no_export)
    again = resolve(parse_target("moonshine-tiny:rtn:4"))
    assert again.backend.meta.directory == directory
    assert again.describe()["content_hash"] == info["content_hash"]
    assert bundle_path(W4) == directory


@pytest.mark.slow
def test_a_cached_bundle_is_found_by_its_recorded_recipe_even_as_a_renamed_archive(private_bundles):
    from edgeasr.export import write_archive

    copy = private_bundles / "copy"
    engine = resolve(W4)
    assert engine.backend.meta.directory == copy  # found by what bundle.json says, not by the folder's name
    archive = write_archive(copy)
    shutil.rmtree(copy)
    archive = archive.rename(private_bundles / "anything.edgeasr.tar")
    assert bundle_path(W4) == archive
    assert resolve(W4).describe()["engine"] == "bundle"


@pytest.mark.slow
def test_a_damaged_bundle_is_refused_with_what_to_do(private_bundles):
    copy = private_bundles / "copy"
    data = copy / "decoder.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="does not match its hash.*delete it"):
        resolve(W4)  # the cached copy: refused, never silently re-exported or used
    with pytest.raises(CheckpointError, match="does not match its hash"):
        resolve(copy)  # named explicitly


@pytest.mark.slow
def test_a_fit_made_by_an_earlier_revision_of_the_method_is_not_reused(private_bundles, monkeypatch, caplog):
    """A method whose default output changes keeps its recipe label: the revision it records is what tells the
    caches apart (HQQ's real-valued zero points did this). The same bundle and checkpoint, now one revision old."""
    from edgeasr.quant import methods

    checkpoint = resolver.cache_dir("checkpoints") / W4.cache_name
    assert json.loads((checkpoint / "quant.json").read_text()).get("method_revision", 1) == 1
    assert json.loads((private_bundles / "copy" / META).read_text()).get("method_revision", 1) == 1
    assert bundle_path(W4, ResolveOptions(quantize=False)) == private_bundles / "copy"
    monkeypatch.setitem(methods.REVISIONS, "rtn", 2)
    with caplog.at_level(logging.INFO, logger="edgeasr.resolver"):
        with pytest.raises(resolver.NotCachedError, match="neither a cached bundle nor a cached checkpoint"):
            bundle_path(W4, ResolveOptions(quantize=False))
    assert "made by rtn revision 1, this edgeasr's is 2: not used" in caplog.text


@pytest.mark.slow
def test_an_a4_recipe_falls_back_to_torch_and_says_why(caplog):
    a4 = Recipe(MODEL, "rtn", 8, 4)
    with caplog.at_level(logging.WARNING, logger="edgeasr.resolver"):
        engine = resolve(a4)
    assert engine.describe()["engine"] == "torch" and "A4" in engine.describe()["engine_reason"]
    assert [r for r in caplog.records if "A4" in r.getMessage() and "torch" in r.getMessage()]
    with pytest.raises(QuantizationError, match="no bundle can represent"):
        resolve(a4, ResolveOptions(engine="bundle"))


@pytest.mark.slow
def test_engine_torch_runs_the_fake_quant_model(speech_clips, w4_engine):
    engine = resolve(W4, ResolveOptions(engine="torch"))
    assert engine.describe()["engine"] == "torch" and engine.backend.kind == "torch"
    assert engine.name == W4.label
    assert _close_to_beckett(engine.transcribe(speech_clips["beckett"]).text)
    with pytest.raises(EdgeASRError, match="runs on ONNX Runtime only"):
        resolve(w4_engine.backend.meta.directory, ResolveOptions(engine="torch"))


@pytest.mark.slow
def test_listen_with_engine_torch(capsys, w4_engine):
    from edgeasr import listen
    from edgeasr.registry import fetch_package, find_file
    from edgeasr.zoo.catalog import MOONSHINE_VOICE

    beckett = find_file(fetch_package(MOONSHINE_VOICE), "assets/beckett.wav")
    code = listen.main(["--model", MODEL, "--method", "rtn", "--bits", "4", "--engine", "torch",
                        "--file", str(beckett), "--fast", "--json", "--no-partials"])
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    finals = [e for e in events if e["type"] == "LineCompleted"]
    assert code == 0 and finals
    # Streamed W4 lines: "fail" heard as "fare" in both of the last two sentences is within reach here.
    assert _close_to_beckett(" ".join(e["text"] for e in finals), limit=0.25)


def test_without_torch_a_missing_bundle_names_the_workstation_commands(tmp_path, monkeypatch):
    monkeypatch.setattr(resolver, "cache_dir", lambda kind: (tmp_path / kind).mkdir(exist_ok=True) or tmp_path / kind)
    monkeypatch.setattr(resolver, "_torch_available", lambda: False)
    with pytest.raises(EdgeASRError, match=r"torch is not installed(.|\n)*edgeasr quantize --model(.|\n)*edgeasr export"):
        bundle_path(Recipe("some-model", "gptq", 3))
    with pytest.raises(EdgeASRError, match="torch is not installed"):
        resolve(Recipe("some-model", "rtn", 8, 4))  # no bundle can represent A4, and no torch to run it


def test_targets_parse_and_bad_ones_are_refused():
    assert parse_target("some-model") == "some-model"
    assert parse_target("some-model:fp") == "some-model"
    assert parse_target("some-model:gptq:3:16:128") == Recipe("some-model", "gptq", 3, 16, 128)
    for bad in ("some-model:rtn", "some-model:rtn:four", "a:b:1:2:3:4"):
        with pytest.raises(EdgeASRError, match="MODEL:METHOD:W_BITS"):
            parse_target(bad)
    with pytest.raises(EdgeASRError, match="engine must be one of"):
        ResolveOptions(engine="gpu")
    with pytest.raises(EdgeASRError, match="nope"):
        resolve("nope")


def test_the_resolver_and_the_server_import_no_torch():
    code = ("import sys, edgeasr.resolver, edgeasr.server.engines, edgeasr.server.app; "
            "assert not {'torch', 'transformers'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
