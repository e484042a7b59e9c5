"""SpQR: small groups with quantized statistics and sparse FP outliers chosen by the GPTQ error."""

from __future__ import annotations

import torch

from edgeasr.engine import Engine
from edgeasr.quant.methods import get_method
from edgeasr.quant.methods._hessian import gptq_quantize
from edgeasr.quant.methods._stats import InputStats
from edgeasr.quant.methods.spqr import SpQRHooks, SpQROptions, quantize_stat, spqr_bits_per_weight
from edgeasr.quant.spec import QuantSpec
from edgeasr.registry import fetch_package, find_file
from edgeasr.zoo.catalog import MOONSHINE_VOICE
from quant_support import QUICK_CALIBRATION, fp_backend, output_error, quantized

MODEL = "moonshine-tiny"




def test_registered():
    info = get_method("spqr")
    assert info.calibrated and info.options is SpQROptions


def test_quantized_statistics():
    values = torch.linspace(0.01, 0.2, 40)
    q = quantize_stat(values, 3, 16)
    for chunk in range(3):  # at most 8 distinct values per chunk of 16 rows (the last one ragged)
        assert q[chunk * 16:(chunk + 1) * 16].unique().numel() <= 8
    assert float((q - values).abs().max()) <= (0.2 - 0.01) / 7
    assert torch.equal(quantize_stat(values, 16, 16), values)
    up = quantize_stat(values, 3, 16, up=True)  # scales rounded up: a group's grid never clips its range
    assert bool((up >= values - 1e-7).all()) and float((up - values).max()) <= (0.2 - 0.01) / 7 + 1e-6


def test_outliers_are_kept_sparse_and_exact():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 64, generator=gen) @ (torch.randn(64, 64, generator=gen) / 8 + torch.eye(64))
    stats = InputStats.empty(64)
    stats.add(x)
    w = torch.randn(200, 64, generator=gen)
    w[3, 10] = w[150, 33] = 25.0
    spec = QuantSpec(3, granularity="group", group_size=16)
    hooks = SpQRHooks(spec, SpQROptions())
    r = gptq_quantize(w, stats.hessian, spec, hooks=hooks)
    assert r.outliers is not None and r.outliers[3, 10] and r.outliers[150, 33]
    assert int(r.outliers.sum(0).max()) <= int(0.01 * 200)  # per-column budget
    assert float(r.weight[3, 10]) != 0.0
    err = lambda wq: float(((x @ (wq - w).T) ** 2).mean())
    no_outliers = gptq_quantize(w, stats.hessian, spec, hooks=SpQRHooks(spec, SpQROptions(outlier_threshold=0)))
    assert no_outliers.outliers is None and err(r.weight) < err(no_outliers.weight)


def test_w3_output_error_below_rtn():
    fp = fp_backend(MODEL)
    q = quantized(MODEL, "spqr", 3)
    layer = q.model.model.encoder.layers[0].mlp.fc1
    assert layer.w_spec.group_size == 16 and layer.sparse_val is not None
    bits = spqr_bits_per_weight(layer, SpQROptions())
    assert 3.5 < bits < 4.5, bits
    err_spqr = output_error(fp, q)
    err_rtn = output_error(fp, quantized(MODEL, "rtn", 3))
    assert err_spqr < err_rtn, (err_spqr, err_rtn)


def test_w8_keeps_beckett_transcript():
    beckett = find_file(fetch_package(MOONSHINE_VOICE), "assets/beckett.wav")
    reference = Engine(fp_backend(MODEL), "fp").transcribe(beckett).text
    assert Engine(quantized(MODEL, "spqr", 8, 16, calibration=QUICK_CALIBRATION), "spqr-w8").transcribe(beckett).text == reference
