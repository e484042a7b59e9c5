"""Bundles beyond plain RTN grids (test_export_runtime.py covers RTN W8/W4 of both families), on moonshine-tiny.

  * Methods that add to the grid — SmoothQuant and OS+ (W8A8: in_scale, in_shift), QuaRot (W4: online
    Hadamard), QUIK (W4: FP outlier input channels), SpQR (W3: sparse FP weights): the bundle matches its
    fake-quant model (encoder states, teacher-forced logits, greedy transcripts), its card counts the layers
    carrying each extra, and every such layer's graph applies the extra around its MatMulNBits node.
  * RTN W2 / W3: the codes sit unchanged in 2- and 4-bit MatMulNBits containers, as the card says.
  * An A4 recipe: the bundle (card, CLI output, export log) says it computes with int8 activations — and it does.
  * `edgeasr export --archive`: the archive loads and transcribes like the directory; damaged archives are
    refused with CheckpointError and leave nothing in the extraction cache.

Method checkpoints use a few calibration clips (what is under test is that the export carries whatever the
method made, not how good it is) and are made once per module; traced graphs are cached by layer layout, so
a warm run only quantizes and re-packs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
import torch

import edgeasr.paths
from edgeasr.backends.hf import HFBackend
from edgeasr.engine import Engine
from edgeasr.errors import CheckpointError
from edgeasr.export import ExportOptions, export_bundle
from edgeasr.export.card import card_notes
from edgeasr.quant.api import load_or_quantize
from edgeasr.quant.checkpoint import read_meta
from edgeasr.quant.methods import method_revision
from edgeasr.runtime import OnnxBackend
from edgeasr.runtime.bundle import read_bundle
from export_support import (CARRIED, GraphIndex, assert_bundle_holds_codes, bundle_errors, bundle_initializers,
                            carries, checkpoint_backend, layer_extras, quant_layers, quantized_checkpoint,
                            transcript_edits)
from quant_support import QUICK_CALIBRATION, held_out_clips, quantized

MODEL = "moonshine-tiny"

TOLERANCE = 0.05
"""Largest relative error of a bundle's encoder states or logits against its fake-quant model: MatMulNBits
quantizes activations to int8 per block (the fake-quant models per token, or not at all), which costs up to
~0.04 here, while a layer's extra left out or misapplied costs 0.4 or more (measured by zeroing each kind)."""

METHOD_EXPORT = ExportOptions(head_bits=8, front_end_bits=None)
"""The method's extras are what these tests check: the default 4-bit head and int8 front end add errors of
their own (measured in docs/honest-bits.md), so the bundles here keep the parts the checkpoint keeps FP."""

N_CLIPS = 4
"""Held-out clips (never calibrated on) the bundles are compared on."""

MAX_WORD_EDITS = 1
"""Normalized word edits allowed over all compared transcripts of the bundle computed in fp32
(accuracy_level 0): its weights and extras are the checkpoint's, so at most one near-tie greedy choice may
flip. The int8 activation path (level 4) is bounded by TOLERANCE instead: on a W3 model's held-out clips its
~0.02 logit error flips several near-ties (SpQR W3: 4 edits at level 4, 1 at level 0, same bundle weights)."""


@dataclass(frozen=True)
class MethodCase:
    method: str
    w_bits: int
    a_bits: int
    extras: frozenset[str]
    """Extras the method must put on some layers (the point of the case)."""
    options: dict = field(default_factory=dict)


METHODS = {
    # scale_layers keeps the smoothing scale on the layers no previous op absorbs (fc2, cross-attention K/V):
    # without it every scale is folded away and the graph would have no extra to check.
    "smoothquant": MethodCase("smoothquant", 8, 8, frozenset({"in_scale"}), {"scale_layers": True}),
    # The paper's shift on every site (the default scales only) and a coarse threshold search (the search is
    # test_method_osplus's subject): ten times faster, and a shift on the layers no LayerNorm bias takes.
    "osplus": MethodCase("osplus", 8, 8, frozenset({"in_scale", "in_shift"}),
                         {"shift": "always", "n_grid": 4, "max_tokens": 256}),
    "quarot": MethodCase("quarot", 4, 16, frozenset({"hadamard"})),
    "quik": MethodCase("quik", 4, 16, frozenset({"outlier_idx"})),
    "spqr": MethodCase("spqr", 3, 16, frozenset({"sparse_idx"})),
}


@dataclass(frozen=True)
class Exported:
    checkpoint: Path
    bundle: Path
    exact_bundle: Path
    """The same export computed in fp32 (accuracy_level 0), for the transcript comparison."""
    reference: HFBackend
    """The checkpoint's fake-quant model, loaded back as `Engine.load` runs it."""


def _make_checkpoint(case: str, target: Path) -> Path:
    if case in METHODS:
        m = METHODS[case]
        return quantized_checkpoint(target, MODEL, m.method, m.w_bits, m.a_bits, calibration=QUICK_CALIBRATION,
                                    **m.options)
    if case == "hqq":  # its defaults: the original fit, real-valued zero points
        return quantized_checkpoint(target, MODEL, "hqq", 3)
    bits = int(case.removeprefix("rtn-w"))  # RTN is calibration-free: the cached checkpoint is the one to export
    return load_or_quantize(MODEL, "rtn", bits)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Callable[[str], Exported]:
    """case → its checkpoint, bundle and fake-quant model, made on first use and kept for the module."""
    root = tmp_path_factory.mktemp("export-methods")
    made: dict[str, Exported] = {}

    def get(case: str) -> Exported:
        if case not in made:
            checkpoint = _make_checkpoint(case, root / f"{case}-checkpoint")
            bundle = export_bundle(root / f"{case}-bundle", checkpoint=checkpoint, options=METHOD_EXPORT)
            exact = export_bundle(root / f"{case}-bundle-fp32", checkpoint=checkpoint,
                                  options=replace(METHOD_EXPORT, accuracy_level=0))
            made[case] = Exported(checkpoint, bundle, exact, checkpoint_backend(checkpoint))
        return made[case]

    return get


@pytest.mark.parametrize("case", METHODS)
def test_method_bundle_matches_fake_quant_model(exported, speech_clips, case):
    made = exported(case)
    runtime = OnnxBackend.load(made.bundle)
    errors = bundle_errors(made.reference, runtime, held_out_clips(N_CLIPS))
    assert max(errors["encoder"]) < TOLERANCE and max(errors["logits"]) < TOLERANCE, errors
    audios = {"beckett": speech_clips["beckett"],
              **{f"held_out_{i}": clip.audio for i, clip in enumerate(held_out_clips(N_CLIPS))}}
    edits = transcript_edits(made.reference, OnnxBackend.load(made.exact_bundle), audios)
    assert sum(e for e, _, _ in edits.values()) <= MAX_WORD_EDITS, edits


@pytest.mark.parametrize("case", METHODS)
def test_method_extras_are_on_the_card_and_in_the_graph(exported, case):
    made = exported(case)
    extras = layer_extras(made.reference.model)
    counts = Counter(e for layer in extras.values() for e in layer)
    assert METHODS[case].extras <= set(counts), f"{case} made no layer with {METHODS[case].extras - set(counts)}"
    meta = read_bundle(made.bundle).data
    records = meta["weights"]["layers"]
    assert {name: set(r["extras"]) for name, r in records.items()} == extras

    notes, card = card_notes(meta), (made.bundle / "README.md").read_text()
    for extra, count in counts.items():
        stated = [n for n in notes if n.startswith(f"{count} layers carry {extra}:")]
        assert len(stated) == 1 and f"- {stated[0]}" in card, (extra, count, notes)

    graphs = {name: GraphIndex(made.bundle / path) for name, path in meta["graphs"].items()}
    missing = [(name, evidence) for name, layer in extras.items() for extra in sorted(layer)
               for evidence in CARRIED[extra]
               if not carries(graphs[records[name]["graph"]], records[name]["node"], evidence)]
    assert not missing, f"{len(missing)} extras not applied around their layer's MatMulNBits, e.g. {missing[:3]}"


def test_quik_outlier_channels_stay_out_of_the_int8_grid(exported):
    """The mask in front of each QUIK layer's MatMulNBits zeroes exactly the FP outlier channels, as the
    fake-quant layer does before its activation grid (left in, an outlier would stretch its int8 block)."""
    made = exported("quik")
    records = read_bundle(made.bundle).data["weights"]["layers"]
    initializers = bundle_initializers(made.bundle)
    layers = {n: m for n, m in quant_layers(made.reference.model).items() if m.outlier_idx is not None}
    assert layers
    for name, layer in layers.items():
        mask = initializers[records[name]["graph"]][f"{records[name]['node']}.outlier_mask"]
        assert np.array_equal(np.flatnonzero(mask == 0), layer.outlier_idx.numpy()), name
        assert np.all(mask[mask != 0] == 1), name


def test_real_valued_zero_points_reach_the_kernel_unrounded(exported):
    """HQQ's zero points stay real numbers (fp16) from the fit to MatMulNBits: the bundle holds the checkpoint's
    codes, scales and zero points exactly, computes what its fake-quant model computes, and its records and card
    count the 16 bits each zero point costs."""
    made = exported("hqq")
    layers = quant_layers(made.reference.model)
    assert all(m.float_zero for m in layers.values())
    assert any(not torch.equal(m.zero, m.zero.round()) for m in layers.values())
    assert_bundle_holds_codes(made.reference.model, made.bundle)
    errors = bundle_errors(made.reference, OnnxBackend.load(made.bundle), held_out_clips(N_CLIPS))
    assert max(errors["encoder"]) < TOLERANCE and max(errors["logits"]) < TOLERANCE, errors
    meta = read_bundle(made.bundle).data
    records = meta["weights"]["layers"]
    bias = lambda name: 0 if layers[name].bias is None else 4 * layers[name].out_features  # fp32, not in the kernel
    assert all(r["float_zero"] and r["packed_bytes"] + bias(name) == layers[name].weight_bytes()
               for name, r in records.items())
    assert all(r["effective_bits"]["zeros"] == 16 * r["n"] * -(-r["k"] // 64) for r in records.values() if not r["tail"])
    assert sum(n.startswith(f"{len(records)} layers keep real-valued zero points") for n in card_notes(meta)) == 1
    # the fit changed under the same recipe label: checkpoint and bundle say which one made them
    assert read_meta(made.checkpoint)["method_revision"] == meta["method_revision"] == method_revision("hqq") == 2


@pytest.mark.parametrize("bits,container", [(2, 2), (3, 4)])
def test_low_bit_codes_sit_in_their_container(exported, bits, container):
    made = exported(f"rtn-w{bits}")
    meta = read_bundle(made.bundle).data
    records = meta["weights"]["layers"].values()
    assert {(r["bits"], r["storage_bits"]) for r in records} == {(bits, container)}
    graphs = {name: GraphIndex(made.bundle / path) for name, path in meta["graphs"].items()}
    assert {graphs[r["graph"]].kernel_bits(r["node"]) for r in records} == {container}
    assert_bundle_holds_codes(made.reference.model, made.bundle)
    # ... and ONNX Runtime reads them as the method's values: a container mix-up would give noise.
    errors = bundle_errors(made.reference, OnnxBackend.load(made.bundle), held_out_clips(N_CLIPS))
    assert max(errors["encoder"]) < TOLERANCE and max(errors["logits"]) < TOLERANCE, errors

    note = f"codes of {bits} bits are stored in {container}-bit containers"
    stated = [n for n in card_notes(meta) if note in n]
    assert len(stated) == (bits != container)  # MatMulNBits packs 2 natively: no container note then
    card = (made.bundle / "README.md").read_text()
    assert all(f"- {n}" in card for n in stated)


# ---- the CLI: an A4 recipe exported with --archive -------------------------------------------------------------

A4_NOTE = "has no A4 kernel"


@dataclass(frozen=True)
class CliExport:
    checkpoint: Path
    bundle: Path
    archive: Path
    stdout: str
    stderr: str


def _edgeasr() -> list[str]:
    script = shutil.which("edgeasr")
    return [script] if script else [sys.executable, "-m", "edgeasr.cli"]


@pytest.fixture(scope="module")
def cli_export(tmp_path_factory) -> CliExport:
    """`edgeasr export --archive` of RTN W8A4, run as a user runs it."""
    checkpoint = load_or_quantize(MODEL, "rtn", 8, 4)
    out = tmp_path_factory.mktemp("cli") / "moonshine-tiny-w8a4"
    run = subprocess.run([*_edgeasr(), "export", "--checkpoint", str(checkpoint), "--out", str(out), "--archive",
                          # the parts the checkpoint keeps FP stay FP: the A8 comparison below is about activations
                          "--head-bits", "8", "--front-end-bits", "16"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return CliExport(checkpoint, out, out.parent / f"{out.name}.edgeasr.tar", run.stdout, run.stderr)


def test_a4_bundle_says_it_computes_with_int8_activations(cli_export):
    meta = read_bundle(cli_export.bundle).data
    assert meta["recipe"]["a_bits"] == 4
    stated = [n for n in card_notes(meta) if A4_NOTE in n]
    assert len(stated) == 1 and "NOT the fake-quant model's" in stated[0]
    assert f"- {stated[0]}" in (cli_export.bundle / "README.md").read_text()
    assert f"note: {stated[0]}" in cli_export.stdout.splitlines()
    assert A4_NOTE in cli_export.stderr  # the exporter's warning, logged while it ran

    # And it is true: RTN codes do not depend on a_bits, so the bundle is the W8A8 fake-quant model, far
    # closer to it than to the W8A4 one whose recipe it carries.
    runtime, clips = OnnxBackend.load(cli_export.bundle), held_out_clips(N_CLIPS)
    to_a8 = max(bundle_errors(quantized(MODEL, "rtn", 8, 8), runtime, clips)["logits"])
    to_a4 = min(bundle_errors(checkpoint_backend(cli_export.checkpoint), runtime, clips)["logits"])
    assert to_a8 < TOLERANCE and to_a8 < to_a4 / 2, (to_a8, to_a4)


@pytest.fixture
def extraction_cache(tmp_path, monkeypatch) -> Path:
    """This test's own archive extraction cache, so it can list what a load leaves there (only the bundle
    cache moves: models and data sets stay in the shared cache)."""
    own, shared = tmp_path / "bundles", edgeasr.paths.cache_dir

    def cache_dir(kind: str) -> Path:
        if kind != "bundles":
            return shared(kind)
        own.mkdir(exist_ok=True)
        return own

    monkeypatch.setattr(edgeasr.paths, "cache_dir", cache_dir)
    return own


def _entries(cache: Path) -> list[str]:
    """Everything in the extraction cache, hidden (temporary) directories included."""
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_cli_archive_loads_like_the_directory(cli_export, speech_clips, extraction_cache):
    printed = json.loads(cli_export.stdout.strip().splitlines()[-1])
    meta = read_bundle(cli_export.bundle).data
    assert printed["bundle"] == str(cli_export.bundle) and printed["content_hash"] == meta["content_hash"]
    with tarfile.open(cli_export.archive) as tar:
        assert sorted(tar.getnames()) == sorted(p.name for p in cli_export.bundle.iterdir())

    directory, packed = Engine.load(cli_export.bundle), Engine.load(cli_export.archive)
    assert packed.backend.meta.data["content_hash"] == meta["content_hash"]
    for audio in (speech_clips["beckett"], held_out_clips(N_CLIPS)[0].audio):
        assert packed.transcribe(audio).text == directory.transcribe(audio).text
    extracted = _entries(extraction_cache)
    assert len(extracted) == 1
    OnnxBackend.load(cli_export.archive)  # extracted once: a second load reuses the directory
    assert _entries(extraction_cache) == extracted


def _truncate(archive: Path) -> None:
    """Cut the archive in the middle of its largest member's data."""
    with tarfile.open(archive) as tar:
        largest = max(tar.getmembers(), key=lambda m: m.size)
    with open(archive, "r+b") as handle:
        handle.truncate(largest.offset_data + largest.size // 2)


def _flip_weight_byte(archive: Path) -> None:
    """Flip one byte inside the decoder's weights: the tar stays well-formed (tar has no data checksum)."""
    with tarfile.open(archive) as tar:
        member = tar.getmember("decoder.onnx.data")
    with open(archive, "r+b") as handle:
        handle.seek(member.offset_data + member.size // 2)
        byte = handle.read(1)[0]
        handle.seek(-1, 1)
        handle.write(bytes([byte ^ 0xFF]))


def _not_a_tar(archive: Path) -> None:
    archive.write_bytes(b"not an archive\n" * 1000)


DAMAGE = {"truncated": (_truncate, "not a readable bundle archive"),
          "flipped_weight_byte": (_flip_weight_byte, "does not match its hash"),
          "not_a_tar": (_not_a_tar, "not a readable bundle archive")}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_archive_is_refused_and_leaves_nothing(cli_export, extraction_cache, tmp_path, damage):
    damage_fn, message = DAMAGE[damage]
    # Same file name as the good archive: a cache keyed by name alone would serve the good extraction.
    damaged = tmp_path / "copy" / cli_export.archive.name
    damaged.parent.mkdir()
    shutil.copy(cli_export.archive, damaged)
    damage_fn(damaged)

    def refused() -> None:
        with pytest.raises(CheckpointError, match=message) as raised:
            OnnxBackend.load(damaged)
        assert str(damaged) in str(raised.value)

    refused()
    assert _entries(extraction_cache) == []  # nothing half-extracted
    OnnxBackend.load(cli_export.archive)
    good = _entries(extraction_cache)
    refused()  # still refused once the good archive of that name is extracted
    assert _entries(extraction_cache) == good
    OnnxBackend.load(cli_export.archive)  # and the refusal did not spoil the good archive's extraction
