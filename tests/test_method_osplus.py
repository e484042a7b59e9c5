"""OS+: searched channel scaling (and, as an option, shifting) beats plain W+A rounding."""

from __future__ import annotations

import functools

import pytest
import torch

from edgeasr.engine import Engine
from edgeasr.errors import QuantizationError
from edgeasr.quant.layers import QuantLinear
from edgeasr.quant.methods import get_method
from edgeasr.quant.methods.osplus import OSPlusOptions, threshold_grid
from edgeasr.registry import fetch_package, find_file
from edgeasr.zoo.catalog import MOONSHINE_VOICE
from quant_support import fp_backend, output_error, quantized

MODEL = "moonshine-tiny"


@functools.lru_cache(maxsize=None)
def osplus(w_bits: int, a_bits: int):
    """One quantization per setting, shared by the error and the transcript checks."""
    return quantized(MODEL, "osplus", w_bits, a_bits)


def test_registered_and_refuses_weight_only():
    info = get_method("osplus")
    assert info.calibrated and info.needs_activation_quant and info.options is OSPlusOptions
    with pytest.raises(QuantizationError, match="a-bits"):
        quantized(MODEL, "osplus", 8, 16)


def test_threshold_grid_starts_without_scaling():
    r = torch.tensor([0.5, 1.0, 2.0, 40.0])
    t = threshold_grid(r, 20)
    assert float(t[0]) == 40.0 and float(t[-1]) == 0.5 and bool((t[1:] <= t[:-1]).all())


@pytest.mark.parametrize("w_bits", [4, 8])
def test_w_a8_output_error_below_rtn(w_bits):
    fp = fp_backend(MODEL)
    q = osplus(w_bits, 8)
    layers = [m for m in q.model.modules() if isinstance(m, QuantLinear)]
    assert any(m.in_scale is not None for m in layers)  # behind GELU / reading the encoder output
    assert all(m.in_shift is None for m in layers)  # the default scales only (test_export_methods shifts)
    err_os = output_error(fp, q)
    err_rtn = output_error(fp, quantized(MODEL, "rtn", w_bits, 8))
    assert err_os < err_rtn, (err_os, err_rtn)


def test_w8a8_keeps_beckett_transcript():
    beckett = find_file(fetch_package(MOONSHINE_VOICE), "assets/beckett.wav")
    reference = Engine(fp_backend(MODEL), "fp").transcribe(beckett).text
    assert Engine(osplus(8, 8), "osplus-w8a8").transcribe(beckett).text == reference
