"""Exported bundles against the fake-quant models they came from, and the torch-free runtime.

RTN checkpoints at W8 and W4 of both families (cached after the first run, as are the traced graphs,
so a warm run exports each bundle in seconds).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgeasr.engine import Engine
from edgeasr.errors import CheckpointError
from edgeasr.export import ExportOptions, export_bundle
from edgeasr.quant.api import load_or_quantize
from edgeasr.quant.checkpoint import load_checkpoint
from edgeasr.registry import fetch_package, find_file
from edgeasr.runtime import OnnxBackend
from edgeasr.runtime.bundle import META, content_hash, file_sha256, read_bundle
from edgeasr.runtime.features import LogMelSettings, whisper_log_mel
from edgeasr.zoo import resolve_model_dir
from edgeasr.zoo.catalog import MOONSHINE_VOICE
from export_support import assert_bundle_holds_codes, checkpoint_backend

CASES = [("moonshine-tiny", 8), ("moonshine-tiny", 4), ("whisper-tiny.en", 8), ("whisper-tiny.en", 4)]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[tuple[str, int], tuple[Path, Path]]:
    """(model, bits) → (checkpoint, bundle)."""
    root = tmp_path_factory.mktemp("bundles")
    made = {}
    for model, bits in CASES:
        checkpoint = load_or_quantize(model, "rtn", bits)
        made[model, bits] = checkpoint, export_bundle(root / f"{model}-w{bits}", checkpoint=checkpoint,
                                                      options=ExportOptions(head_bits=8))
    return made


@pytest.fixture(scope="module")
def beckett() -> Path:
    return find_file(fetch_package(MOONSHINE_VOICE), "assets/beckett.wav")


def test_log_mel_matches_whisper_feature_extractor(speech_clips):
    from transformers import WhisperFeatureExtractor

    from edgeasr.zoo import fetch

    extractor = WhisperFeatureExtractor.from_pretrained(fetch("whisper-tiny.en"))
    settings = LogMelSettings(extractor.n_fft, extractor.hop_length, extractor.n_samples)
    filters = np.asarray(extractor.mel_filters, np.float32)
    long_audio = np.concatenate([speech_clips["beckett"]] * 4)  # over 30 s: cut like the extractor
    for audio in (speech_clips["beckett"], speech_clips["two_cities_0"], long_audio, np.zeros(800, np.float32)):
        expected = extractor(audio, sampling_rate=16000, return_tensors="np").input_features
        ours = whisper_log_mel(audio, filters, settings)
        assert ours.shape == expected.shape == (1, 80, 3000)
        assert np.abs(ours - expected).max() < 1e-4


@pytest.mark.parametrize("model,bits", CASES)
def test_bundle_matches_fake_quant_model(bundles, speech_clips, model, bits):
    checkpoint, bundle = bundles[model, bits]
    reference = checkpoint_backend(checkpoint)
    runtime = OnnxBackend.load(bundle)
    audio = speech_clips["beckett"]
    prompt = list(reference.settings.prompt)
    with torch.inference_mode():
        expected = reference.model(encoder_outputs=reference.encode(audio),
                                   decoder_input_ids=torch.tensor([prompt])).logits[0].numpy()
    got = runtime.decoder_step(runtime.encode(audio))(prompt)
    # The decoder step's MatMulNBits computes with int8 activations (accuracy_level=4) and the head is 8-bit:
    # close, not equal (whisper-tiny.en W8 on beckett: 0.053 relative; 0.014 with an fp32 decoder step).
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 0.07
    for name in ("beckett", "two_cities_0", "two_cities_1"):
        ours = Engine(runtime, "bundle").transcribe(speech_clips[name]).text
        theirs = Engine(reference, "fake-quant").transcribe(speech_clips[name]).text
        assert ours == theirs, name


@pytest.mark.parametrize("model,bits", [("moonshine-tiny", 4), ("whisper-tiny.en", 8)])
def test_bundle_holds_the_checkpoints_codes(bundles, model, bits):
    checkpoint, bundle = bundles[model, bits]
    assert_bundle_holds_codes(load_checkpoint(checkpoint)[0], bundle)


def _resident_mb(bundle: Path) -> float:
    """RSS growth (MB) of a fresh process loading `bundle` and transcribing 1 s of silence, after onnxruntime
    itself is imported. The run matters: weights that no kernel pre-packs at load stay unread pages of the
    mapped weight file until a graph first touches them."""
    code = textwrap.dedent(f"""
        import ctypes, sys
        def rss(): return int(open("/proc/self/statm").read().split()[1]) * 4096
        import numpy, onnxruntime, tokenizers
        from edgeasr.runtime import OnnxBackend
        before = rss()
        backend = OnnxBackend.load({str(bundle)!r})
        backend.run(numpy.zeros(16000, numpy.float32))
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        print((rss() - before) / 1e6)
    """)
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def test_resident_weights_are_the_packed_bytes(bundles):
    """W8 minus W4 of one model: resident growth equals the analytic packed difference (session overheads cancel),
    which fails if any layer were held dequantized."""
    w8, w4 = bundles["whisper-tiny.en", 8][1], bundles["whisper-tiny.en", 4][1]
    analytic = (read_bundle(w8).data["sizes"]["weight_bytes"] - read_bundle(w4).data["sizes"]["weight_bytes"]) / 1e6
    measured = _resident_mb(w8) - _resident_mb(w4)
    assert abs(measured - analytic) / analytic < 0.1, (measured, analytic)



@pytest.mark.parametrize("model,slices", [("moonshine-tiny", "heads"), ("whisper-tiny.en", "queries")])
def test_encoder_attention_runs_in_slices(bundles, model, slices):
    """The encoder never holds all heads' scores at once (the peak of a long segment): Moonshine's length follows
    the audio, so it is sliced by heads, Whisper's fixed 1500 positions by queries; no mask, no NaN guard."""
    from edgeasr.export.graphs import HEAD_CHUNK, QUERY_CHUNK

    bundle = bundles[model, 4][1]
    graph = onnx.load(bundle / "encoder.onnx", load_external_data=False).graph
    ops = [n.op_type for n in graph.node]
    config = json.loads((Path(resolve_model_dir(model)[0]) / "config.json").read_text())
    layers = config.get("encoder_num_hidden_layers") or config["encoder_layers"]
    per_layer = -(-config["encoder_num_attention_heads"] // HEAD_CHUNK) if slices == "heads" else -(-1500 // QUERY_CHUNK)
    assert ops.count("Softmax") == layers * per_layer
    assert "IsNaN" not in ops


BLOCK_TORCH = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(f"{name} is blocked: the runtime must not import it")
sys.meta_path.insert(0, Block())
"""


def test_runtime_runs_without_torch(bundles, beckett, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCK_TORCH)
    bundle = bundles["moonshine-tiny", 4][1]
    code = textwrap.dedent(f"""
        import json, sys
        from edgeasr.engine import Engine
        t = Engine.load({str(bundle)!r}).transcribe({str(beckett)!r})
        print(json.dumps({{"text": t.text, "torch": "torch" in sys.modules}}))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert not result["torch"]
    assert result["text"].lower().startswith("ever tried")


def _rehash(bundle: Path) -> None:
    data = json.loads((bundle / META).read_text())
    data["files"] = {name: file_sha256(bundle / name) for name in data["files"]}
    data["content_hash"] = content_hash(data["files"])
    (bundle / META).write_text(json.dumps(data))


def test_corrupt_or_mismatched_bundles_are_refused(bundles, tmp_path):
    source = bundles["moonshine-tiny", 4][1]
    other = bundles["whisper-tiny.en", 8][1]

    flipped = shutil.copytree(source, tmp_path / "flipped")
    with open(flipped / "decoder.onnx.data", "r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(CheckpointError, match="does not match its hash"):
        OnnxBackend.load(flipped)

    edited = shutil.copytree(source, tmp_path / "edited")
    data = json.loads((edited / META).read_text())
    data["files"]["tokenizer.json"] = "0" * 64
    (edited / META).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="content hash"):
        OnnxBackend.load(edited)

    # A decoder from another model, with hashes made consistent: only the graph check can catch it.
    mixed = shutil.copytree(source, tmp_path / "mixed")
    for name in ("decoder.onnx", "decoder.onnx.data"):
        shutil.copy(other / name, mixed / name)
    _rehash(mixed)
    with pytest.raises(CheckpointError, match="graphs from different models"):
        OnnxBackend.load(mixed)

    with pytest.raises(CheckpointError, match="not an edgeasr bundle"):
        OnnxBackend.load(tmp_path)
