"""Cost readouts: hand-counted MACs, agreement with torch's flop counter, and dependence on the recipe."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from torch.utils.flop_counter import FlopCounterMode

from edgeasr.backends.hf import HFBackend
from edgeasr.backends.layers import describe_layers
from edgeasr.engine import Engine
from edgeasr.metrics.cost import LayerInfo, ModelDims, estimate_cost, estimate_cost_from_layers, model_size
from edgeasr.quant.api import quantize
from edgeasr.quant.recipe import Recipe
from edgeasr.zoo import fetch


@functools.lru_cache(maxsize=None)
def fp_backend(model: str) -> HFBackend:
    return HFBackend.from_pretrained(fetch(model), model)


def test_tiny_known_layers_counted_by_hand():
    # A 2-conv front end (k3 s1 p1, then k3 s2 p1) on a 1 s, 100 frame/s input, one encoder linear,
    # one decoder linear, over 4 decoder tokens.
    dims = ModelDims("whisper", 2, 2, 100.0, None)
    layers = [
        LayerInfo("model.encoder.conv1", "conv1d", 8, 16, weight_bytes=2 * 8 * 16 * 3, kernel=3, padding=1),
        LayerInfo("model.encoder.conv2", "conv1d", 16, 16, weight_bytes=2 * 16 * 16 * 3, kernel=3, stride=2, padding=1),
        LayerInfo("model.encoder.layers.0.fc1", "linear", 16, 32, w_bits=4, a_bits=8, weight_bytes=300),
        LayerInfo("model.decoder.layers.0.fc1", "linear", 16, 32, weight_bytes=2 * 16 * 32),
    ]
    cost = estimate_cost_from_layers(layers, dims, audio_seconds=1.0, n_tokens=4)
    assert cost.encoder_positions == 50  # (100 + 2 - 3) // 2 + 1
    conv_macs = 100 * 16 * 8 * 3 + 50 * 16 * 16 * 3
    enc_linear_macs = 50 * 16 * 32
    assert cost.encoder.macs == conv_macs + enc_linear_macs
    assert cost.encoder.bops == conv_macs * 256 + enc_linear_macs * 4 * 8
    assert cost.decoder.macs == 4 * 16 * 32
    assert cost.decoder.weight_read_bytes == 4 * 2 * 16 * 32  # decoder weights read once per token
    assert cost.encoder.weight_read_bytes == 2 * 8 * 16 * 3 + 2 * 16 * 16 * 3 + 300
    # Activations of the quantized linear: 8-bit input read, 16-bit output written.
    assert cost.by_kind["linear"].activation_bytes == 50 * 16 + 50 * 32 * 2 + 4 * (16 * 2 + 32 * 2)


def test_attention_products_counted_by_hand():
    # No front end: 1 s at 100 frames/s gives 100 encoder positions; 4 decoder tokens.
    dims = ModelDims("moonshine", 2, 2, 100.0, None)
    layers = [LayerInfo(f"model.{name}.q_proj", "linear", 16, 16, weight_bytes=512)
              for name in ("encoder.layers.0.self_attn", "decoder.layers.0.self_attn", "decoder.layers.0.encoder_attn")]
    attention = estimate_cost_from_layers(layers, dims, 1.0, 4).by_kind["attention"]
    encoder = 2 * 100 * 100 * 16          # Q·Kᵀ and P·V over 100 × 100 positions, width 16
    self_attn = 2 * (1 + 2 + 3 + 4) * 16  # position p reads p + 1 cached keys
    cross = 2 * 4 * 100 * 16              # every token attends to the 100 encoder positions
    assert attention.macs == encoder + self_attn + cross
    assert attention.bops == 256 * attention.macs and attention.weight_read_bytes == 0


@pytest.mark.parametrize("model", ["moonshine-tiny", "whisper-tiny.en"])
def test_encoder_macs_match_flop_counter(model):
    backend = fp_backend(model)
    backend.model.set_attn_implementation("eager")  # the counter has no formula for CPU sdpa kernels
    try:
        audio = np.random.default_rng(0).standard_normal(5 * 16000).astype(np.float32) * 0.1
        with FlopCounterMode(display=False) as counter:
            backend.encode(audio)
    finally:
        backend.model.set_attn_implementation("sdpa")
    counted = counter.get_total_flops() / 2
    estimated = estimate_cost(backend, 5.0, 20).encoder.macs
    assert estimated == pytest.approx(counted, rel=0.02)


def test_moonshine_encoder_length_follows_audio_and_whisper_does_not():
    moon = estimate_cost(fp_backend("moonshine-tiny"), 5.0, 20)
    assert moon.encoder_positions == 207  # conv strides 64, 3, 2 on 80000 samples: ~41.6 per second
    assert estimate_cost(fp_backend("moonshine-tiny"), 10.0, 20).encoder.macs > 1.9 * moon.encoder.macs
    whisper = [estimate_cost(fp_backend("whisper-tiny.en"), s, 20) for s in (1.0, 20.0)]
    assert whisper[0].encoder_positions == whisper[1].encoder_positions == 1500
    assert whisper[0].encoder.macs == whisper[1].encoder.macs


def test_tied_output_projection_counted_once_in_size():
    layers = describe_layers(fp_backend("whisper-tiny.en").model)
    assert next(layer for layer in layers if layer.name == "proj_out").tied_to == "model.decoder.embed_tokens"
    size = model_size(fp_backend("whisper-tiny.en"))
    params = sum(p.numel() for p in fp_backend("whisper-tiny.en").model.parameters())
    assert size.params == params
    assert size.fp32_weight_bytes == 4 * params


def test_cost_follows_the_recipe():
    fp = estimate_cost(fp_backend("moonshine-tiny"), 5.0, 20)
    costs = {bits: estimate_cost(quantize(Recipe("moonshine-tiny", "rtn", bits, 16, 64))[0], 5.0, 20)
             for bits in (8, 4)}
    assert fp.weight_bytes > costs[8].weight_bytes > costs[4].weight_bytes
    assert fp.bops > costs[8].bops > costs[4].bops
    assert fp.memory_io_bytes > costs[8].memory_io_bytes > costs[4].memory_io_bytes
    assert fp.macs == costs[8].macs == costs[4].macs  # same work, narrower operands
    # Quantized linears: W8 halves their 16-bit weight operand in BOPs.
    assert costs[8].by_kind["linear"].bops < 0.6 * fp.by_kind["linear"].bops
    w8a8 = estimate_cost(quantize(Recipe("moonshine-tiny", "rtn", 8, 8, 64))[0], 5.0, 20)
    assert w8a8.bops < costs[8].bops and w8a8.weight_bytes == costs[8].weight_bytes


def test_engine_attaches_cost_to_transcripts(speech_clips):
    engine = Engine(fp_backend("moonshine-tiny"), "moonshine-tiny")
    transcript = engine.transcribe(speech_clips["beckett"])
    cost = transcript.cost
    assert cost is not None and cost.n_tokens >= len(transcript.tokens)
    assert cost.audio_seconds == pytest.approx(transcript.audio_seconds)
    data = transcript.to_dict()["cost"]
    assert data["memory_io_bytes"] == cost.memory_io_bytes > 0 and data["bops"] == cost.bops > 0
    assert set(data["by_kind"]) == {"conv1d", "linear", "attention", "embedding"}


def test_unknown_shapes_fail_clearly():
    with pytest.raises(ValueError, match="too short"):
        estimate_cost(fp_backend("moonshine-tiny"), 0.001, 1)


def test_quant_linear_extras_add_fp_work():
    layers = [LayerInfo("model.decoder.layers.0.fc1", "linear", 64, 64, 4, 16, weight_bytes=100, fp_in_features=8,
                        sparse_nnz=10)]
    dims = ModelDims("moonshine", 1, 1, 16000.0, None)
    cost = estimate_cost_from_layers(layers, dims, 1.0, 1)
    assert cost.decoder.macs == 64 * 56 + 64 * 8 + 10
    assert cost.decoder.bops == 64 * 56 * 4 * 16 + (64 * 8 + 10) * 256
