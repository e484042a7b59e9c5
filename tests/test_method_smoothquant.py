"""SmoothQuant: migrating activation outliers into the weights beats plain W+A rounding."""

from __future__ import annotations

import functools

import pytest
import torch

from edgeasr.engine import Engine
from edgeasr.errors import QuantizationError
from edgeasr.quant.methods import get_method
from edgeasr.quant.methods.smoothquant import SmoothQuantOptions, alpha_candidates, smooth_scale
from edgeasr.registry import fetch_package, find_file
from edgeasr.zoo.catalog import MOONSHINE_VOICE
from quant_support import fp_backend, output_error, quantized

MODEL = "moonshine-tiny"


@functools.lru_cache(maxsize=None)
def smoothquant(w_bits: int, a_bits: int):
    """One quantization per setting, shared by the error and the transcript checks."""
    return quantized(MODEL, "smoothquant", w_bits, a_bits)


def test_registered_and_refuses_weight_only():
    info = get_method("smoothquant")
    assert info.calibrated and info.needs_activation_quant and info.options is SmoothQuantOptions
    with pytest.raises(QuantizationError, match="a-bits"):
        quantized(MODEL, "smoothquant", 8, 16)


def test_smooth_scale_balances_ranges():
    act, weight = torch.tensor([100.0, 1.0, 0.01]), torch.tensor([0.5, 0.5, 0.5])
    s = smooth_scale(act, weight, 0.5)
    assert torch.allclose(act / s, weight * s)  # α = 0.5: equal activation and weight ranges per channel
    assert torch.allclose(smooth_scale(act, weight, 0.0), 1 / weight)


@pytest.mark.parametrize("w_bits", [4, 8])
def test_w_a8_output_error_below_rtn(w_bits):
    fp = fp_backend(MODEL)
    err_sq = output_error(fp, smoothquant(w_bits, 8))
    err_rtn = output_error(fp, quantized(MODEL, "rtn", w_bits, 8))
    assert err_sq < err_rtn, (err_sq, err_rtn)


def test_one_alpha_by_default_and_a_grid_on_request():
    assert alpha_candidates(SmoothQuantOptions()) == [0.5]  # the paper's one α
    assert alpha_candidates(SmoothQuantOptions(alpha=0.7)) == [0.7]
    assert alpha_candidates(SmoothQuantOptions(alpha_grid=4)) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_w8a8_keeps_beckett_transcript():
    beckett = find_file(fetch_package(MOONSHINE_VOICE), "assets/beckett.wav")
    reference = Engine(fp_backend(MODEL), "fp").transcribe(beckett).text
    assert Engine(smoothquant(8, 8), "sq-w8a8").transcribe(beckett).text == reference
