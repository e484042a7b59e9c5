"""QuaRot: a true Hadamard transform run as a butterfly (in torch and in the exported graph), exact in FP,
and far less lossy than RTN at 4-bit activations (and weights)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgeasr.backends.hf import HFBackend
from edgeasr.engine import Engine
from edgeasr.errors import QuantizationError
from edgeasr.metrics.cost import rotation_ops
from edgeasr.quant.hadamard import (HadamardTransform, UnsupportedWidth, hadamard_factors, hadamard_matrix,
                                    hadamard_transform)
from edgeasr.quant.arch import graph_for
from edgeasr.quant.layers import QuantLinear
from edgeasr.quant.methods.quarot import SignDraws, rotate_fp, rotate_residual_stream, rotated_layer, rotated_weight
from edgeasr.quant.spec import QuantSpec
from edgeasr.registry import fetch_package, find_file
from edgeasr.zoo import fetch
from edgeasr.zoo.catalog import MOONSHINE_VOICE
from quant_support import QUICK_CALIBRATION, fp_backend, held_out_clips, output_error, quantized

MODEL = "moonshine-tiny"

ZOO_WIDTHS = {384: (12, 32), 1536: (12, 128), 512: (1, 512), 2048: (1, 2048),  # whisper-tiny, whisper-base
              288: (36, 8), 1152: (36, 32), 416: (52, 8), 1664: (52, 32)}    # moonshine-tiny, moonshine-base
"""Every linear input width of the zoo and its split m · 2ᵏ (m the Paley block, 1 for powers of two)."""


@pytest.mark.parametrize("width", ZOO_WIDTHS)
def test_transform_is_a_hadamard_product(width):
    h = hadamard_matrix(width).double()
    # A Hadamard matrix: every entry ±1 (here over √n), rows orthogonal.
    assert torch.equal((h * math.sqrt(width)).round().abs(), torch.ones(width, width, dtype=torch.float64))
    assert torch.allclose((h * math.sqrt(width)).round(), h * math.sqrt(width), atol=1e-4)
    assert torch.allclose(h @ h.T, torch.eye(width, dtype=torch.float64), atol=1e-5)
    x = torch.randn(2, 7, width)
    assert torch.allclose(hadamard_transform(x), x @ hadamard_matrix(width), atol=1e-4)


@pytest.mark.parametrize("width", ZOO_WIDTHS)
def test_split_and_cost_count_the_butterfly(width):
    m, power = hadamard_factors(width)
    assert (m, power) == ZOO_WIDTHS[width]
    assert rotation_ops(width) == width * (int(math.log2(power)) + (m if m > 1 else 0)) < width ** 2 / 5


@pytest.mark.parametrize("width", [7, 18, 92 * 4])
def test_widths_without_a_hadamard_are_refused(width):
    with pytest.raises(UnsupportedWidth, match=f"width {width}"):
        hadamard_factors(width)


@pytest.mark.parametrize("width", [384, 512])
@torch.no_grad()
def test_random_signs_spread_the_row_sum(width):
    """Q = D·H (the paper's randomized Hadamard) is still a Hadamard matrix and the layer computes x·Q online;
    H alone puts each weight row's sum into its constant column, D·H spreads it like any other direction."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(width, 64)
    linear.weight.copy_(torch.randn(64, width) * 0.02 + 0.01)  # rows with a common offset, as real rows have
    d = SignDraws(seed=0).draw(width)
    q = torch.diag(d.double()) @ hadamard_matrix(width).double()
    assert torch.equal((q * math.sqrt(width)).round().abs(), torch.ones(width, width, dtype=torch.float64))
    assert torch.allclose(q @ q.T, torch.eye(width, dtype=torch.float64), atol=1e-5)
    signed = rotated_weight(linear, d)
    assert torch.allclose(signed.double(), linear.weight.double() @ q, atol=1e-6)
    peak = lambda w: float(w.abs().amax(0).max() / w.abs().amax(0).median())  # largest column vs typical
    assert peak(rotated_weight(linear)) > 3 and peak(signed) < 2
    layer = rotated_layer(linear, QuantSpec(8), QuantSpec(16), d)
    assert layer.hadamard and torch.equal(layer.in_scale, d)  # the signs travel with the layer (checkpoint, bundle)
    x = torch.randn(5, width)
    assert torch.allclose(layer(x), linear(x), atol=2e-2 * float(linear(x).abs().max()))


class _RotatedMatmul(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.hadamard = HadamardTransform(width)
        self.weight_t = torch.nn.Parameter(torch.randn(width, 8), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.hadamard(x), self.weight_t)


def _matmul_constant_shapes(graph: onnx.GraphProto) -> list[tuple[int, ...]]:
    """Shapes of the initializers every MatMul of `graph` reads."""
    inits = {i.name: tuple(i.dims) for i in graph.initializer}
    return [inits[i] for n in graph.node if n.op_type == "MatMul" for i in n.input if i in inits]


@pytest.mark.parametrize("width", [512, 384])
@torch.inference_mode()
def test_exported_transform_is_a_butterfly(tmp_path, width):
    """The traced rotation is log₂(2ᵏ) Add/Sub stages (and an m × m MatMul for m > 1), no width × width MatMul."""
    m, power = hadamard_factors(width)
    module = _RotatedMatmul(width).eval()
    path = tmp_path / "rotation.onnx"
    torch.onnx.export(module, (torch.zeros(1, 3, width),), dynamo=True, opset_version=18, optimize=False,
                      dynamic_shapes=({1: torch.export.Dim.DYNAMIC},), input_names=["x"]).save(str(path))
    graph = onnx.load(path).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["Add"] == ops["Sub"] == int(math.log2(power))
    assert sorted(_matmul_constant_shapes(graph)) == sorted([(width, 8)] + ([(m, m)] if m > 1 else []))
    x = np.random.default_rng(0).standard_normal((1, 11, width)).astype(np.float32)
    got = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    expected = (torch.from_numpy(x) @ hadamard_matrix(width) @ module.weight_t).numpy()
    assert np.abs(got - expected).max() < 1e-4 * np.abs(expected).max()


@pytest.mark.parametrize("mode", ["per-linear", "folded", "residual"])
@torch.inference_mode()
def test_rotation_is_exact_in_fp(mode):
    fp = fp_backend(MODEL)
    rotated = HFBackend.from_pretrained(fetch(MODEL))
    if mode == "residual":
        rotate_residual_stream(rotated.model, graph_for(rotated.model))
    else:
        rotate_fp(rotated.model, graph_for(rotated.model), fold=mode == "folded")
    clip = held_out_clips(1)[0]
    enc_ref, enc_rot = fp.encode(clip.audio), rotated.encode(clip.audio)
    ids = torch.tensor([list(fp.settings.prompt) + fp.tokenizer(" " + clip.text, add_special_tokens=False).input_ids])
    ref = fp.model(encoder_outputs=enc_ref, decoder_input_ids=ids, use_cache=False).logits
    rot = rotated.model(encoder_outputs=enc_rot, decoder_input_ids=ids, use_cache=False).logits
    assert float((rot - ref).norm() / ref.norm()) < 1e-3
    rel_enc = (enc_rot.last_hidden_state - enc_ref.last_hidden_state).norm() / enc_ref.last_hidden_state.norm()
    assert float(rel_enc) < 1e-3


@pytest.mark.parametrize("a_bits", [8, 4])
def test_w4_activation_quant_beats_rtn(a_bits):
    fp = fp_backend(MODEL)
    q = quantized(MODEL, "quarot", 4, a_bits)
    layers = [m for m in q.model.modules() if isinstance(m, QuantLinear)]
    assert layers and all(m.hadamard for m in layers)
    err_quarot = output_error(fp, q)
    err_rtn = output_error(fp, quantized(MODEL, "rtn", 4, a_bits))
    assert err_quarot < (0.9 if a_bits == 8 else 0.7) * err_rtn, (err_quarot, err_rtn)


def test_gptq_runs_on_the_shared_walk_and_beats_rtn(caplog):
    """GPTQ on the rotated basis takes its Hessians from the shared walk (so a thin calibration set is warned
    about, as for GPTQ itself) and lands closer to FP than rounding the rotated weights at W3."""
    fp = fp_backend(MODEL)
    with caplog.at_level("WARNING", logger="edgeasr.quant.methods._hessian"):
        gptq = quantized(MODEL, "quarot", 3, calibration=QUICK_CALIBRATION, weight_method="gptq")
    assert "rank-deficient" in caplog.text
    assert output_error(fp, gptq) < output_error(fp, quantized(MODEL, "quarot", 3))


def test_mixed_bits_take_each_layers_width_and_the_plan_pays_for_the_signs():
    """Under --avg-bits, QuaRot-GPTQ quantizes each linear at the width the plan chose for it, and the plan counts
    the ±1 signs every rotated linear keeps: the effective bits measured on the quantized layers stay at or under
    the target, and they are exactly what the plan spent."""
    from edgeasr.quant.api import quantize
    from edgeasr.quant.mixed import BudgetOptions, plan
    from edgeasr.quant.recipe import Recipe

    recipe = Recipe(MODEL, "quarot", 4, calibration=QUICK_CALIBRATION, group_size_at={2: 32},
                    options={"weight_method": "gptq", "clip_grid": 20})
    mixed, allocation, scores, _ = plan(recipe, BudgetOptions(avg_bits=3.0))
    backend, _stats, _location = quantize(mixed)
    layers = {name: m for name, m in backend.model.named_modules() if isinstance(m, QuantLinear)}
    assert set(layers) == set(mixed.layer_bits) and {m.w_spec.bits for m in layers.values()} == {2, 4}
    assert all(m.w_spec == mixed.w_spec_for(name) and m.hadamard and m.in_scale is not None for name, m in layers.items())
    measured = sum(m.storage_bits().total for m in layers.values())
    assert measured == allocation.cost <= 3.0 * sum(s.layout.weights for s in scores)


def test_unsupported_options_are_refused():
    with pytest.raises(QuantizationError, match="rtn.*gptq"):
        quantized(MODEL, "quarot", 4, 8, weight_method="awq")


def test_w8a8_keeps_beckett_transcript():
    beckett = find_file(fetch_package(MOONSHINE_VOICE), "assets/beckett.wav")
    reference = Engine(fp_backend(MODEL), "fp").transcribe(beckett).text
    assert Engine(quantized(MODEL, "quarot", 8, 8), "quarot-w8a8").transcribe(beckett).text == reference


@pytest.mark.slow
def test_w4_bundle_runs_the_butterfly_and_keeps_transcripts(tmp_path):
    """A QuaRot W4 bundle: no MatMul reads a square constant wider than the Paley block, one butterfly per
    rotated layer, and its transcript of a held-out clip is the fake-quant model's (bundle computed in fp32, as
    tests/test_export_methods.py compares them: the int8 activation path may flip a near-tie of its own)."""
    from dataclasses import replace

    from edgeasr.export import ExportOptions, export_bundle
    from edgeasr.runtime import OnnxBackend
    from edgeasr.runtime.bundle import read_bundle
    from export_support import checkpoint_backend, quantized_checkpoint, transcript_edits

    checkpoint = quantized_checkpoint(tmp_path / "checkpoint", MODEL, "quarot", 4)
    options = ExportOptions(head_bits=8, front_end_bits=None)  # only QuaRot's own parts differ from the checkpoint
    bundle = export_bundle(tmp_path / "bundle", checkpoint=checkpoint, options=replace(options, accuracy_level=0))
    reference = checkpoint_backend(checkpoint)
    rotated = [m for m in reference.model.modules() if isinstance(m, QuantLinear) and m.hadamard]
    assert rotated and all(m.in_scale is not None and set(m.in_scale.abs().tolist()) == {1.0} for m in rotated)
    blocks = {(m, m) for m, _ in (hadamard_factors(layer.in_features) for layer in rotated)}
    subs = 0
    for path in read_bundle(bundle).graphs.values():
        graph = onnx.load(path).graph
        squares = {s for s in _matmul_constant_shapes(graph) if len(s) == 2 and s[0] == s[1]}
        assert squares <= blocks, squares
        subs += sum(n.op_type == "Sub" for n in graph.node)
    assert subs >= sum(int(math.log2(hadamard_factors(m.in_features)[1])) for m in rotated)
    clip = held_out_clips(1)[0]
    edits = transcript_edits(reference, OnnxBackend.load(bundle), {"clip": clip.audio})
    assert edits["clip"][0] == 0, edits


def test_quarot_reads_calibration_only_with_gptq_weights() -> None:
    from edgeasr.quant.methods import get_method

    info = get_method("quarot")
    assert info.uses_calibration({}) is False  # rounding the rotated weights needs no audio
    assert info.uses_calibration({"weight_method": "gptq"}) is True
    assert get_method("gptq").uses_calibration({}) is True and get_method("hqq").uses_calibration({}) is False
