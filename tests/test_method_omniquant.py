"""OmniQuant: learned clipping + equivalent transformation beat RTN; folding the learned LET is exact."""

from __future__ import annotations

import torch

from edgeasr.engine import Engine
from edgeasr.quant.methods.omniquant import lwc_fake_quant, lwc_qparams
from edgeasr.quant.spec import QuantSpec, dequantize_weight, fake_quant_weight, quantize_weight
from edgeasr.registry import fetch_package, find_file
from edgeasr.zoo.catalog import MOONSHINE_VOICE
from quant_support import fp_backend, output_error, quantized

MODEL = "moonshine-tiny"


def test_lwc_grid_matches_the_stored_grid():
    """The differentiable clipped grid used in training is the grid the QuantLinear stores."""
    torch.manual_seed(0)
    spec = QuantSpec(3, False, "group", 64)
    w = torch.randn(8, 288)
    up, low = torch.randn(8, 5) + 3, torch.randn(8, 5) + 3
    scale, zero = lwc_qparams(w, up, low, spec)
    stored = dequantize_weight(quantize_weight(w, scale, zero, spec), scale, zero, spec)
    assert torch.allclose(lwc_fake_quant(w, up, low, spec), stored, atol=1e-6)
    big = torch.full((8, 5), 30.0)  # σ → 1: plain min/max RTN
    assert torch.allclose(lwc_fake_quant(w, big, big, spec), fake_quant_weight(w, spec), atol=1e-6)
    # gradients reach the clipping logits through the straight-through rounding
    up.requires_grad_(True)
    lwc_fake_quant(w, up, low, spec).square().sum().backward()
    assert up.grad is not None and up.grad.abs().sum() > 0


def test_w3_beats_rtn():
    fp = fp_backend(MODEL)
    err_omni = output_error(fp, quantized(MODEL, "omniquant", 3, epochs=3))
    err_rtn = output_error(fp, quantized(MODEL, "rtn", 3))
    assert err_omni < 0.8 * err_rtn, (err_omni, err_rtn)


def test_w4a8_beats_rtn():
    fp = fp_backend(MODEL)
    err_omni = output_error(fp, quantized(MODEL, "omniquant", 4, 8, epochs=2))
    err_rtn = output_error(fp, quantized(MODEL, "rtn", 4, 8))
    assert err_omni < err_rtn, (err_omni, err_rtn)


def test_w8_keeps_beckett_transcript():
    beckett = find_file(fetch_package(MOONSHINE_VOICE), "assets/beckett.wav")
    reference = Engine(fp_backend(MODEL), "fp").transcribe(beckett).text
    assert Engine(quantized(MODEL, "omniquant", 8, epochs=1), "omniquant-w8").transcribe(beckett).text == reference
