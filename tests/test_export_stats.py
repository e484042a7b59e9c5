"""Honest storage without a model: effective bits counted by hand, and quantized statistics (SpQR) that
survive the checkpoint's state dict and the bundle's graph bit-exactly."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from edgeasr.export.bundle import _pack_layers
from edgeasr.export.rewrite import MS_DOMAIN, kernel_inputs
from edgeasr.metrics.bits import GridLayout, bundle_layer_bytes, layer_bits
from edgeasr.metrics.cost import model_effective_bits, size_from_layers
from edgeasr.metrics.layers import LayerInfo
from edgeasr.quant.layers import QuantLinear
from edgeasr.quant.methods.spqr import quantize_stat
from edgeasr.quant.spec import QuantSpec

FP = QuantSpec()


def _plain_layer() -> QuantLinear:
    """8 × 64, W3 in groups of 16, asymmetric, two sparse FP outliers."""
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 8, (8, 64), generator=gen, dtype=torch.uint8)
    scale = torch.rand(8, 4, generator=gen) / 10 + 0.01
    zero = torch.randint(0, 8, (8, 4), generator=gen).float()
    return QuantLinear.from_codes(codes, scale, zero, torch.zeros(8), QuantSpec(3, group_size=16), FP,
                                  sparse_idx=torch.tensor([[1, 5], [3, 60]]), sparse_val=torch.tensor([0.5, -0.25]))


def _float_zero_layer() -> QuantLinear:
    """8 × 64, W2 in groups of 16, real-valued zero points (HQQ): fp16 values between and beyond the grid's steps."""
    gen = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 4, (8, 64), generator=gen, dtype=torch.uint8)
    scale = torch.rand(8, 4, generator=gen) / 10 + 0.01
    zero = torch.rand(8, 4, generator=gen) * 4 - 0.5
    return QuantLinear.from_codes(codes, scale, zero, None, QuantSpec(2, group_size=16), FP, float_zero=True)


def _stat_layer(out: int = 40) -> QuantLinear:
    """out × 64, W4 in groups of 16, scales as 3-bit codes with an fp16 (min, step) per 16 rows."""
    gen = torch.Generator().manual_seed(1)
    raw = torch.rand(out, 4, generator=gen) / 10 + 0.001
    pairs = [quantize_stat(raw[:, g], 3, 16, up=True) for g in range(4)]
    codes = torch.stack([c for c, _ in pairs], dim=1)
    stats = torch.stack([s for _, s in pairs], dim=1)
    weights = torch.randint(0, 16, (out, 64), generator=gen, dtype=torch.uint8)
    return QuantLinear.from_codes(weights, torch.zeros(out, 4), torch.full((out, 4), 8.0), torch.zeros(out),
                                  QuantSpec(4, group_size=16), FP, stat_bits=3, stat_group=16,
                                  scale_codes=codes, scale_stats=stats)


def test_effective_bits_of_a_hand_built_layer():
    layer = _plain_layer()
    bits = layer.storage_bits()
    # codes 8·64·3, fp16 scales 8·4·16, 3-bit zeros 8·4·3, two outliers at 48 bits; the bias is not counted
    assert (bits.codes, bits.scales, bits.zeros, bits.sparse, bits.extras) == (1536, 512, 96, 96, 0)
    assert bits.per_weight == 2240 / 512
    # bundle: 4-bit containers 8·64/2, fp16 scales 8·4·2, zeros two bytes per row, fp32 bias, 6 bytes per outlier
    assert layer.weight_bytes() == 256 + 64 + 16 + 32 + 12
    stat = _stat_layer(32).storage_bits()
    # 3-bit scale codes 32·4·3 + an fp16 pair per 16 rows and group 2·4·32; zeros stay 4-bit (cheaper than 3 + 2)
    assert (stat.scales, stat.zeros) == (384 + 256, 512)
    records = [LayerInfo(f"model.encoder.layers.0.{n}", "linear", m.in_features, m.out_features, m.w_spec.bits,
                         weight_bytes=m.weight_bytes(), quant_bits=m.storage_bits().total)
               for n, m in (("fc1", layer), ("fc2", _stat_layer(32)))]
    assert model_effective_bits(records) == round((2240 + stat.total) / (512 + 2048), 4)
    fp = LayerInfo("model.decoder.embed_tokens", "embedding", 100, 64, params=6400)
    size = size_from_layers(records + [fp])
    # the head of a quantized model's bundle: 4-bit codes, fp16 scales, 4-bit zeros in blocks of 64
    assert size.total_parts["head"] == 100 * 32 + 100 * 2 + 100 * 1
    assert size.total_bytes == sum(r.weight_bytes for r in records) + size.total_parts["head"]


def test_real_valued_zero_points_cost_16_bits_each():
    layer = _float_zero_layer()
    assert layer.float_zero and layer.zero.dtype == torch.float16
    assert not torch.equal(layer.zero, layer.zero.round())  # kept between the grid's steps, not rounded onto it
    bits = layer.storage_bits()
    # codes 8·64·2, fp16 scales and fp16 zero points 8·4·16 each
    assert (bits.codes, bits.scales, bits.zeros) == (1024, 512, 512)
    # bundle: 2-bit codes 8·64/4, fp16 scales 8·4·2 and fp16 zero points 8·4·2 (no bias)
    assert layer.weight_bytes() == 128 + 64 + 64
    packed = next(iter(_pack_layers(torch.nn.Sequential(layer)).values()))
    assert packed.float_zero and packed.nbytes == layer.weight_bytes()


def test_outlier_cost_is_one_number():
    g = GridLayout(16, 64, 4, 16, n_sparse=10)
    assert layer_bits(g).sparse == 10 * 48
    assert bundle_layer_bytes(g) - bundle_layer_bytes(GridLayout(16, 64, 4, 16)) == 10 * 6


def test_statistics_survive_the_state_dict_bit_exactly():
    layer = _stat_layer()
    state = layer.state_dict()
    assert "scale" not in state and {"scale_codes", "scale_stats"} <= set(state)
    again = QuantLinear(64, 40, layer.w_spec, FP, True, stat_bits=3, stat_group=16)
    again.load_state_dict(state)
    assert torch.equal(again.scale, layer.scale) and torch.equal(again.scale_codes, layer.scale_codes)
    assert torch.equal(again.dequantized_weight(), layer.dequantized_weight())


def _kernel_model(layer: QuantLinear) -> tuple[onnx.ModelProto, str]:
    packed = next(iter(_pack_layers(torch.nn.Sequential(layer)).values()))
    inits, nodes, inputs = kernel_inputs("fc", packed)
    node = helper.make_node("MatMulNBits", ["x", *inputs], ["y"], domain=MS_DOMAIN, K=packed.k, N=packed.n,
                            bits=packed.bits, block_size=packed.block_size, accuracy_level=0)
    graph = helper.make_graph(nodes + [node], "kernel", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, layer.out_features]),
                               helper.make_tensor_value_info(inputs[1], TensorProto.FLOAT, [layer.scale.numel()])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(MS_DOMAIN, 1)])
    return model, inputs[1]


@pytest.mark.parametrize("make", [_stat_layer, _plain_layer, _float_zero_layer],
                         ids=["spqr-statistics", "fp16-scales", "hqq-real-zero-points"])
def test_the_graph_computes_the_layers_scales_bit_exactly(make):
    layer = make()
    model, _scales = _kernel_model(layer)
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    y, scales = session.run(None, {"x": x})
    assert np.array_equal(scales.reshape(layer.scale.shape), layer.scale.numpy())
    grid = (layer.codes.float().reshape(layer.out_features, 4, 16) - layer.zero.float()[..., None]) * layer.scale[..., None]
    expected = x @ grid.reshape(layer.out_features, 64).numpy().T
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    stored = {t.name: t for t in model.graph.initializer}
    if layer.scale_codes is not None:  # no fp scales stored: 4-bit code containers and fp16 pairs only
        assert not any(t.data_type == TensorProto.FLOAT and "scale" in n for n, t in stored.items())
    else:
        assert stored["fc.scales"].data_type == TensorProto.FLOAT16


def test_a_ragged_last_group_is_a_kernel_of_its_own():
    """K = 80 in groups of 32: blocks of 32 over 64 columns and a 16-wide tail, no zero-padded columns;
    the bytes are what metrics.bits says and the output is the layer's."""
    from edgeasr.export.rewrite import _kernel_nodes

    gen = torch.Generator().manual_seed(2)
    layer = QuantLinear.from_codes(torch.randint(0, 16, (24, 80), generator=gen, dtype=torch.uint8),
                                   torch.rand(24, 3, generator=gen) / 10 + 0.01, torch.full((24, 3), 8.0), None,
                                   QuantSpec(4, group_size=32), FP)
    packed = next(iter(_pack_layers(torch.nn.Sequential(layer)).values()))
    assert (packed.k, packed.block_size, packed.tail.k, packed.tail.block_size) == (64, 32, 16, 16)
    assert packed.nbytes == layer.weight_bytes()
    inits, prelude = [], []
    nodes = _kernel_nodes("fc", packed, "x", "y", 0, inits, prelude)
    graph = helper.make_graph(prelude + nodes, "ragged", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 80])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 24])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(MS_DOMAIN, 1)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((2, 80)).astype(np.float32)
    np.testing.assert_allclose(session.run(None, {"x": x})[0], x @ layer.dequantized_weight().numpy().T,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("bits", "group"), [(4, 64), (8, 64), (4, 32)])
def test_the_lookup_reads_the_heads_own_storage(bits, group):
    """Token rows of a 288-wide table (blocks of 64 and a 32-wide tail, or nine blocks of 32: the head's group size
    is an export setting) from the head's packed bytes, scales and zero points (stored once, shared with its
    MatMulNBits): the dequantized rows exactly."""
    from edgeasr.export.packing import pack_table
    from edgeasr.export.rewrite import HEAD, _lookup_nodes

    table = torch.randn(100, 288, generator=torch.Generator().manual_seed(3))
    head = pack_table(table, bits, group)
    assert head.block_size == group and (head.tail is None) == (288 % group == 0)
    parts = [(HEAD, head)] + ([(f"{HEAD}.tail", head.tail)] if head.tail is not None else [])
    inits, prelude = [], []
    for name, part in parts:
        part_inits, part_nodes, _ = kernel_inputs(name, part)
        inits += part_inits
        prelude += part_nodes
    gather = helper.make_node("Gather", ["table", "ids"], ["rows"])
    nodes = _lookup_nodes(gather, head, inits)
    graph = helper.make_graph(prelude + nodes, "lookup", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 3])],
                              [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [1, 3, 288])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(MS_DOMAIN, 1)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ids = np.array([[0, 41, 99]])
    rows = session.run(None, {"ids": ids})[0]

    def dequantized(p):
        from edgeasr.export.packing import unpack
        codes = np.pad(unpack(replace(p, tail=None)), ((0, 0), (0, p.n_blocks * p.block_size - p.k)))
        w = (codes.reshape(p.n, p.n_blocks, -1) - p.zero_points[..., None].astype(np.float32)) * p.scales[..., None]
        return w.reshape(p.n, -1)[:, : p.k]

    expected = np.concatenate([dequantized(part) for _, part in parts], axis=1)[ids[0]]
    np.testing.assert_array_equal(rows[0], expected.astype(np.float32))
    assert not any("zero_points3" in t.name for t in inits)  # no second copy of the zero points on disk
