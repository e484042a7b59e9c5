"""Scale/shift folding (shared by AWQ, SmoothQuant, OS+) must leave a float block's output unchanged.

Real blocks of whisper-tiny.en (LayerNorm with bias, GELU fc2 kept as in_scale) and moonshine-tiny
(LayerNorm without bias so shifts stay as in_shift, gated decoder MLP whose value half takes the scale),
encoder and decoder, on real speech.
"""

from __future__ import annotations

import copy

import pytest
import torch

from edgeasr.quant.arch import graph_for
from edgeasr.quant.calibrate import BlockContext, block_outputs, capture_inputs
from edgeasr.quant.layers import QuantLinear
from edgeasr.quant.methods._folding import FoldedLinear, apply_scale, apply_shift, quantize_block_linears, scale_sites
from edgeasr.quant.methods._stats import collect_input_stats
from edgeasr.quant.recipe import CalibrationOptions
from edgeasr.quant.spec import QuantSpec
from quant_support import fp_backend, held_out_clips


@pytest.fixture(scope="module", params=[("whisper-tiny.en", "encoder"), ("whisper-tiny.en", "decoder"),
                                        ("moonshine-tiny", "encoder"), ("moonshine-tiny", "decoder")],
                ids=lambda p: "-".join(p))
def block_ctx(request):
    model, part = request.param
    backend = fp_backend(model)
    arch = graph_for(backend.model)
    inputs = capture_inputs(backend, arch, part, list(held_out_clips()[:2]), CalibrationOptions("asterisk-en-calib", max_decoder_tokens=32))
    block = copy.deepcopy(arch.blocks(backend.model, part)[0])  # the cached FP model stays untouched
    return BlockContext(part, 0, f"{part}.0", block, arch.block_graph(part), inputs, arch)


def _rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).norm() / y.norm()) for x, y in zip(a, b))


def _strong_scales(stats, generator) -> torch.Tensor:
    """SmoothQuant-like scales times a random factor: far from one, so a wrong fold would show."""
    s = stats.absmax.clamp(min=1e-5).sqrt()
    return s * torch.exp(torch.empty_like(s).uniform_(-1.5, 1.5, generator=generator))


@pytest.mark.parametrize("order", ["shift_then_scale", "scale_then_shift"])
def test_folding_is_exact_in_float(block_ctx, order):
    ctx = copy.copy(block_ctx)
    ctx.block = copy.deepcopy(block_ctx.block)
    reference = block_outputs(ctx.block, ctx.inputs)
    sites = scale_sites(ctx.graph)
    kinds = {s.kind for s in sites}
    assert "layer" in kinds and "norm" in kinds and "linear" in kinds
    if ctx.arch.family == "moonshine" and ctx.part == "decoder":
        assert "gated_value" in kinds
    stats = collect_input_stats(ctx, [s.input_path for s in sites])
    generator = torch.Generator().manual_seed(0)
    for site in sites:
        st = stats[site.input_path]
        delta, s = (st.max + st.min) / 2, _strong_scales(st, generator)
        if order == "shift_then_scale":
            apply_shift(ctx.block, site, delta)
            apply_scale(ctx.block, site, s)
        else:
            apply_scale(ctx.block, site, s)
            apply_shift(ctx.block, site, delta / s)  # δ is in the coordinates the matmul now sees
    folded = block_outputs(ctx.block, ctx.inputs)
    assert _rel(folded, reference) < 1e-4

    # the matmuls now see centred inputs: the midpoint of every channel moved to zero
    after = collect_input_stats(ctx, [s.input_path for s in sites])
    for site in sites:
        st = after[site.input_path]
        assert float(((st.max + st.min) / 2).abs().max()) < 1e-3 * float(st.absmax.max())

    # what no previous op could absorb survives quantization as QuantLinear in_scale / in_shift
    layer_paths = [p for s in sites if s.kind == "layer" for p in s.targets]
    for path in layer_paths:
        assert isinstance(ctx.linear(path), FoldedLinear) and ctx.linear(path).in_scale is not None
    if not ctx.arch.norm_has_bias:  # Moonshine: the norm has no bias, so the shift stays on q/k/v
        assert ctx.linear(ctx.graph.edges[0].targets[0]).in_shift is not None
    else:  # Whisper: the shift went into the LayerNorm bias
        assert getattr(ctx.linear(ctx.graph.edges[0].targets[0]), "in_shift", None) is None
    spec = QuantSpec(8, granularity="group", group_size=32)
    quantize_block_linears(ctx.block, ctx.graph, spec, QuantSpec(16))
    for path in ctx.graph.linears:
        assert isinstance(ctx.linear(path), QuantLinear)
    for path in layer_paths:
        assert ctx.linear(path).in_scale is not None
    assert _rel(block_outputs(ctx.block, ctx.inputs), reference) < 0.1  # 8 bits on deliberately skewed scales
