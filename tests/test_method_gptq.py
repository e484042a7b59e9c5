"""GPTQ: the Hessian-based error compensation core (shared with QUIK and SpQR) and the method on real audio."""

from __future__ import annotations

import torch

from edgeasr.engine import Engine
from edgeasr.quant.methods import get_method
from edgeasr.quant.methods._hessian import GPTQHooks, gptq_quantize, sequential_stages
from edgeasr.quant.methods._stats import InputStats
from edgeasr.quant.methods.gptq import GPTQOptions
from edgeasr.quant.arch import GRAPHS
from edgeasr.quant.spec import QuantSpec, dequantize_weight, fake_quant_weight, quantize_weight
from edgeasr.registry import fetch_package, find_file
from edgeasr.zoo.catalog import MOONSHINE_VOICE
from quant_support import QUICK_CALIBRATION, fp_backend, output_error, quantized

MODEL = "moonshine-tiny"


def _layer_problem(out_f=48, in_f=200, tokens=3000):
    """Correlated inputs (as in real layers) so error compensation has something to work with."""
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(in_f, in_f, generator=gen) / 14 + torch.eye(in_f)
    x = torch.randn(tokens, in_f, generator=gen) @ mix * (torch.rand(in_f, generator=gen) * 3 + 0.1)
    stats = InputStats.empty(in_f)
    stats.add(x[: tokens // 3])
    stats.add(x[tokens // 3:])
    return torch.randn(out_f, in_f, generator=gen), x, stats




def test_registered():
    info = get_method("gptq")
    assert info.calibrated and not info.needs_activation_quant and info.options is GPTQOptions


def test_hessian_running_mean():
    _, x, stats = _layer_problem()
    assert stats.n == x.shape[0]
    assert torch.allclose(stats.hessian, 2 * x.T @ x / x.shape[0], rtol=1e-4, atol=1e-2)
    assert torch.equal(stats.absmax, x.abs().amax(0))


def test_core_beats_rounding_and_stays_on_grid():
    w, x, stats = _layer_problem()
    spec = QuantSpec(3, granularity="group", group_size=64)  # 200 = 3 x 64 + a ragged group of 8
    err = lambda wq: float(((x @ (wq - w).T) ** 2).mean())
    rtn = err(fake_quant_weight(w, spec))
    for act_order in (False, True):
        for static_groups in (False, True):
            r = gptq_quantize(w, stats.hessian, spec, act_order=act_order, static_groups=static_groups, block_size=32)
            assert r.scale.shape == (48, 4) and r.outliers is None
            # the returned weights are exactly representable on the returned grid: codes reproduce them
            codes = quantize_weight(r.weight, r.scale, r.zero, spec)
            assert torch.allclose(dequantize_weight(codes, r.scale, r.zero, spec), r.weight, atol=1e-5)
            assert err(r.weight) < 0.7 * rtn, (act_order, static_groups, err(r.weight), rtn)


def test_clipping_search_lowers_the_2_bit_error_and_stays_on_grid():
    w, x, stats = _layer_problem()
    w[::7, ::11] *= 6  # heavy-tailed rows: min/max spends the four levels on a few weights
    spec = QuantSpec(2, granularity="group", group_size=32)
    err = lambda wq: float(((x @ (wq - w).T) ** 2).mean())
    plain = gptq_quantize(w, stats.hessian, spec)
    assert torch.equal(gptq_quantize(w, stats.hessian, spec, hooks=GPTQHooks(spec, clip_grid=0)).weight, plain.weight)
    searched = gptq_quantize(w, stats.hessian, spec, hooks=GPTQHooks(spec, clip_grid=20, max_shrink=0.75))
    codes = quantize_weight(searched.weight, searched.scale, searched.zero, spec)
    assert torch.allclose(dequantize_weight(codes, searched.scale, searched.zero, spec), searched.weight, atol=1e-5)
    assert (searched.scale <= plain.scale * 1.0001).float().mean() > 0.5  # most grids shrank, none was forced to
    assert err(searched.weight) < 0.9 * err(plain.weight), (err(searched.weight), err(plain.weight))


def test_fp_channels_absorb_error():
    w, x, stats = _layer_problem()
    spec = QuantSpec(3, granularity="group", group_size=64)
    keep = torch.tensor([3, 70, 199])
    r = gptq_quantize(w, stats.hessian, spec, keep_fp=keep)
    assert not torch.equal(r.weight[:, keep], w[:, keep])  # compensated, not frozen
    rest = r.weight.index_fill(1, keep, 0.0)
    codes = quantize_weight(rest, r.scale, r.zero, spec)
    assert torch.allclose(dequantize_weight(codes, r.scale, r.zero, spec), rest, atol=1e-5)
    err = lambda wq: float(((x @ (wq - w).T) ** 2).mean())
    assert err(r.weight) < err(gptq_quantize(w, stats.hessian, spec).weight)


def test_sequential_stages():
    assert sequential_stages(GRAPHS["moonshine"].decoder) == [
        ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("self_attn.o_proj",),
        ("encoder_attn.q_proj",), ("encoder_attn.k_proj", "encoder_attn.v_proj"), ("encoder_attn.o_proj",),
        ("mlp.fc1",), ("mlp.fc2",)]
    assert len(sequential_stages(GRAPHS["whisper"].encoder)) == 4


def test_w3_output_error_below_rtn():
    fp = fp_backend(MODEL)
    err_gptq = output_error(fp, quantized(MODEL, "gptq", 3))
    err_rtn = output_error(fp, quantized(MODEL, "rtn", 3))
    assert err_gptq < err_rtn, (err_gptq, err_rtn)


def test_w8_keeps_beckett_transcript():
    beckett = find_file(fetch_package(MOONSHINE_VOICE), "assets/beckett.wav")
    reference = Engine(fp_backend(MODEL), "fp").transcribe(beckett).text
    assert Engine(quantized(MODEL, "gptq", 8, 16, calibration=QUICK_CALIBRATION), "gptq-w8").transcribe(beckett).text == reference
