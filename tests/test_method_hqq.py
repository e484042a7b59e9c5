"""HQQ: calibration-free lp-norm grid optimisation lowers the weight error and the output error vs RTN."""

from __future__ import annotations

import pytest
import torch

from edgeasr.engine import Engine
from edgeasr.quant.methods import get_method
from edgeasr.quant.methods.hqq import HQQOptions, hqq_qparams
from edgeasr.quant.spec import QuantSpec, dequantize_weight, fake_quant_weight, quantize_weight
from edgeasr.registry import fetch_package, find_file
from edgeasr.zoo.catalog import MOONSHINE_VOICE
from quant_support import fp_backend, output_error, quantized

MODEL = "moonshine-tiny"


def test_registered_calibration_free():
    info = get_method("hqq")
    assert not info.calibrated and info.options is HQQOptions


@pytest.mark.parametrize("symmetric", [False, True])
def test_weight_error_below_rtn(symmetric):
    """The direct check: on real weights (one encoder and one decoder block, ragged 288-wide groups
    included) the HQQ grid reproduces the weights better than min/max rounding, in lp and in L2."""
    spec = QuantSpec(3, symmetric, "group", 64)
    model = fp_backend(MODEL).model
    rtn_l2 = hqq_l2 = rtn_lp = hqq_lp = 0.0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and (".layers.0." in name):
            w = module.weight.detach().float()
            scale, zero = hqq_qparams(w, spec)
            assert scale.shape == zero.shape == (w.shape[0], spec.n_groups(w.shape[1]))
            assert zero.min() >= 0 and zero.max() <= spec.qmax
            assert torch.equal(zero, zero.round()) == symmetric  # real-valued unless the grid is symmetric
            w_hqq = dequantize_weight(quantize_weight(w, scale, zero, spec), scale, zero, spec)
            w_rtn = fake_quant_weight(w, spec)
            rtn_l2 += float((w - w_rtn).square().sum())
            hqq_l2 += float((w - w_hqq).square().sum())
            rtn_lp += float((w - w_rtn).abs().pow(0.7).sum())
            hqq_lp += float((w - w_hqq).abs().pow(0.7).sum())
    assert hqq_lp < 0.97 * rtn_lp
    assert hqq_l2 < 0.95 * rtn_l2


def test_grid_spans_every_group_unless_told_not_to():
    """With `optimize_scale` (integer zero points, the scale refitted) and keep_range the refit scale never cuts a
    group's largest weights off its grid (what broke Whisper at 3 bits); without keep_range the lp-norm clips some
    groups of these same layers."""
    spec = QuantSpec(3, False, "group", 64)
    model = fp_backend(MODEL).model
    clipped = {True: 0, False: 0}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and (".layers.0." in name):
            w = module.weight.detach().float()
            groups = w.reshape(w.shape[0], -1, 64) if w.shape[1] % 64 == 0 else None
            if groups is None:
                continue
            lo, hi = groups.amin(-1).clamp(max=0), groups.amax(-1).clamp(min=0)
            for keep in (True, False):
                options = HQQOptions(optimize_scale=True, float_zero=False, keep_range=keep)
                scale, zero = hqq_qparams(w, spec, options)
                # clipped: a weight further than half a step outside the grid (min/max rounding's own bound)
                tolerance = 1e-5 * (hi - lo)
                clipped[keep] += int(((-(zero + 0.5) * scale > lo + tolerance)
                                      | ((spec.qmax - zero + 0.5) * scale < hi - tolerance)).sum())
    assert clipped[True] == 0 and clipped[False] > 0, clipped


def test_real_valued_zero_points_fit_between_the_steps():
    """The default, the original HQQ (zero point only, kept real-valued): on the same real weights its lp error is
    below both min/max rounding and the same fit held to integer zero points, which can hardly move off min/max's."""
    spec = QuantSpec(3, False, "group", 64)
    model = fp_backend(MODEL).model
    lp = {"rtn": 0.0, "integer": 0.0, "real": 0.0}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and (".layers.0." in name):
            w = module.weight.detach().float()
            grids = {"rtn": None, "integer": HQQOptions(float_zero=False), "real": HQQOptions()}
            for kind, options in grids.items():
                if options is None:
                    w_q = fake_quant_weight(w, spec)
                else:
                    scale, zero = hqq_qparams(w, spec, options)
                    assert torch.equal(zero, zero.round()) == (kind == "integer")
                    w_q = dequantize_weight(quantize_weight(w, scale, zero, spec), scale, zero, spec)
                lp[kind] += float((w - w_q).abs().pow(0.7).sum())
    assert lp["real"] < 0.97 * lp["integer"] and lp["integer"] <= 1.01 * lp["rtn"], lp


def test_w3_output_error_below_rtn():
    fp = fp_backend(MODEL)
    err_hqq = output_error(fp, quantized(MODEL, "hqq", 3))
    err_rtn = output_error(fp, quantized(MODEL, "rtn", 3))
    assert err_hqq < err_rtn, (err_hqq, err_rtn)


def test_w8_keeps_beckett_transcript():
    beckett = find_file(fetch_package(MOONSHINE_VOICE), "assets/beckett.wav")
    reference = Engine(fp_backend(MODEL), "fp").transcribe(beckett).text
    assert Engine(quantized(MODEL, "hqq", 8), "hqq-w8").transcribe(beckett).text == reference
