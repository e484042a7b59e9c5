"""QUIK: FP outlier input channels + GPTQ on the rest, with activations quantized outside the outliers."""

from __future__ import annotations

import torch

from edgeasr.engine import Engine
from edgeasr.quant.layers import QuantLinear
from edgeasr.quant.methods import get_method
from edgeasr.quant.methods.quik import QUIKOptions, outlier_channels
from edgeasr.quant.spec import QuantSpec, fake_quant_activation
from edgeasr.registry import fetch_package, find_file
from edgeasr.zoo.catalog import MOONSHINE_VOICE
from quant_support import QUICK_CALIBRATION, fp_backend, output_error, quantized

MODEL = "moonshine-tiny"




def test_registered():
    info = get_method("quik")
    assert info.calibrated and info.options is QUIKOptions


def test_outlier_channels():
    absmax = torch.ones(64)
    absmax[[5, 40]] = 50.0
    assert outlier_channels(absmax, 2).tolist() == [5, 40]
    assert outlier_channels(absmax, 100).numel() == 8  # capped at width / 8
    assert outlier_channels(absmax, 0).numel() == 0


def test_outliers_do_not_stretch_the_activation_grid():
    w_spec, a_spec = QuantSpec(8, granularity="group", group_size=16), QuantSpec(4, granularity="tensor")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(10, 32, generator=gen)
    x[:, 7] *= 100.0
    weight = torch.randn(4, 32, generator=gen) * 0.1
    codes = torch.full((4, 32), 128, dtype=torch.uint8)  # zero weights on the grid: only outliers contribute
    layer = QuantLinear.from_codes(codes, torch.ones(4, 2), torch.full((4, 2), 128.0), None, w_spec, a_spec,
                                   outlier_idx=torch.tensor([7]), outlier_weight=weight[:, [7]])
    assert torch.allclose(layer(x), x[:, [7]] @ weight[:, [7]].T, atol=1e-5)
    # the other channels are quantized on the grid their own range sets, not the outlier's
    layer.load_state_dict({**layer.state_dict(), "codes": torch.full((4, 32), 129, dtype=torch.uint8)})
    rest = x.index_fill(1, torch.tensor([7]), 0.0)
    expected = fake_quant_activation(rest, a_spec) @ layer.dequantized_weight().T + x[:, [7]] @ weight[:, [7]].T
    assert torch.allclose(layer(x), expected, atol=1e-4)
    exact = rest @ torch.ones(32, 4) + x[:, [7]] @ weight[:, [7]].T
    assert float((layer(x) - exact).abs().mean()) < 0.1 * float((fake_quant_activation(x, a_spec) @ torch.ones(32, 4) - exact).abs().mean())


def test_w4a8_output_error_below_rtn():
    fp = fp_backend(MODEL)
    q = quantized(MODEL, "quik", 4, 8)
    fc2 = q.model.model.encoder.layers[0].mlp.fc2
    assert fc2.outlier_idx is not None and fc2.outlier_idx.numel() > q.model.model.encoder.layers[0].mlp.fc1.outlier_idx.numel()
    err_quik = output_error(fp, q)
    err_rtn = output_error(fp, quantized(MODEL, "rtn", 4, 8))
    assert err_quik < err_rtn, (err_quik, err_rtn)


def test_w3_output_error_below_rtn():
    fp = fp_backend(MODEL)
    err_quik = output_error(fp, quantized(MODEL, "quik", 3))
    err_rtn = output_error(fp, quantized(MODEL, "rtn", 3))
    assert err_quik < err_rtn, (err_quik, err_rtn)


def test_w8a8_keeps_beckett_transcript():
    beckett = find_file(fetch_package(MOONSHINE_VOICE), "assets/beckett.wav")
    reference = Engine(fp_backend(MODEL), "fp").transcribe(beckett).text
    assert Engine(quantized(MODEL, "quik", 8, 8, calibration=QUICK_CALIBRATION), "quik-w8a8").transcribe(beckett).text == reference
