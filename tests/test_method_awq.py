"""AWQ: activation-aware scales (folded into the previous op) and clipping beat plain rounding."""

from __future__ import annotations

import torch

from edgeasr.engine import Engine
from edgeasr.quant.methods import get_method
from edgeasr.quant.methods.awq import AWQOptions, awq_scale, search_clip
from edgeasr.quant.spec import QuantSpec, fake_quant_weight
from edgeasr.registry import fetch_package, find_file
from edgeasr.zoo.catalog import MOONSHINE_VOICE
from quant_support import fp_backend, output_error, quantized

MODEL = "moonshine-tiny"


def test_registered():
    info = get_method("awq")
    assert info.calibrated and not info.needs_activation_quant and info.options is AWQOptions


def test_scale_and_clip_helpers():
    mean_abs = torch.tensor([0.1, 1.0, 10.0])
    assert torch.allclose(awq_scale(mean_abs, 0.0), torch.ones(3))
    s = awq_scale(mean_abs, 0.5)
    assert torch.isclose(s.max() * s.min(), torch.tensor(1.0)) and s[2] > s[1] > s[0]
    # clipping never does worse than the unclipped grid on the error it minimises (ragged last group too)
    gen = torch.Generator().manual_seed(0)
    w, x = torch.randn(16, 96, generator=gen), torch.randn(256, 96, generator=gen)
    spec = QuantSpec(3, granularity="group", group_size=64)
    clip = search_clip(w, x.T @ x, spec, 20, 0.5)
    assert clip.shape == (16, 2) and float(clip.min()) >= 0.55 and float(clip.max()) <= 1.0
    err = lambda wq: float(((x @ (wq - w).T) ** 2).sum())
    assert err(fake_quant_weight(w, spec, clip)) <= err(fake_quant_weight(w, spec)) * 1.001


def test_w3_output_error_below_rtn():
    fp = fp_backend(MODEL)
    q = quantized(MODEL, "awq", 3)
    assert q.model.model.encoder.layers[0].mlp.fc2.in_scale is not None  # behind GELU: kept on the layer
    err_awq = output_error(fp, q)
    err_rtn = output_error(fp, quantized(MODEL, "rtn", 3))
    assert err_awq < err_rtn, (err_awq, err_rtn)


def test_w8_keeps_beckett_transcript():
    beckett = find_file(fetch_package(MOONSHINE_VOICE), "assets/beckett.wav")
    reference = Engine(fp_backend(MODEL), "fp").transcribe(beckett).text
    assert Engine(quantized(MODEL, "awq", 8), "awq-w8").transcribe(beckett).text == reference
