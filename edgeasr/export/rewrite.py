"""Turn the traced graphs' marked MatMuls and Gathers into packed ONNX Runtime ops.

`MatMul(x, <layer>.qweight_t)` → `MatMulNBits(x, B, scales, zero_points)` from the layer's own codes;
`Gather(<...>.qtable, ids)` → `GatherBlockQuantized` over the head's packed bytes (one copy of the tied
table on disk), or with an FP head a Gather along axis 1 of the head's [d, vocab] matrix.
Scales are stored in fp16 and widened by a Cast (MatMulNBits reads scales of its input's type); ONNX
Runtime folds that constant once at load. `quantize_initializers` stores other weights (conv front end,
position tables) as int8 with one scale per row, read through a DequantizeLinear.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeasr.errors import CheckpointError
from edgeasr.export.graphs import MARKER, TABLE
from edgeasr.export.packing import PackedWeight, ScaleStats

MS_DOMAIN = "com.microsoft"
HEAD = "head"


def _layer_of(initializer: str, suffix: str) -> str | None:
    return initializer[: -len(suffix) - 1] if initializer.endswith("." + suffix) else None


def rewrite_graph(model: onnx.ModelProto, packed: dict[str, PackedWeight | None], accuracy_level: int) -> set[str]:
    """Rewrite `model` in place; `packed` maps a stand-in's path (as traced) to its weight, None = keep FP.

    Returns the layer paths that were rewritten, so the caller can check none was missed.
    """
    nodes, done, drop = [], set(), set()
    prelude: list[onnx.NodeProto] = []  # constant-only nodes (scale widening): first, so every user follows them
    new_inits: list[onnx.TensorProto] = []
    for node in model.graph.node:
        layer = _layer_of(node.input[1], MARKER) if node.op_type == "MatMul" and len(node.input) == 2 else None
        table = _layer_of(node.input[0], TABLE) if node.op_type == "Gather" else None
        if layer is not None and layer in packed:
            done.add(layer)
            weight = packed[layer]
            if weight is None:
                nodes.append(node)
                continue
            drop.add(node.input[1])
            nodes += _kernel_nodes(layer, weight, node.input[0], node.output[0], accuracy_level, new_inits, prelude)
        elif table is not None and HEAD in packed:
            done.add(table)
            drop.add(node.input[0])
            nodes += _lookup_nodes(node, packed[HEAD], new_inits)
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(prelude + nodes)
    kept = [t for t in model.graph.initializer if t.name not in drop]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + new_inits)
    if any(n.domain == MS_DOMAIN for n in nodes) and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return done


def packed_initializers(layer: str, weight: PackedWeight) -> list[onnx.TensorProto]:
    """MatMulNBits' B / scales (fp32) / zero_points initializers of one packed weight, named after `layer`."""
    return [numpy_helper.from_array(weight.data, f"{layer}.B"),
            numpy_helper.from_array(weight.scales.reshape(-1), f"{layer}.scales"),
            numpy_helper.from_array(weight.packed_zero_points().reshape(-1), f"{layer}.zero_points")]


def _kernel_nodes(layer: str, weight: PackedWeight, x: str, y: str, accuracy_level: int,
                  new_inits: list[onnx.TensorProto], prelude: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """MatMulNBits for `weight` (x → y); with a ragged tail, one kernel per column range and their sum."""
    def kernel(name: str, w: PackedWeight, source: str, target: str) -> onnx.NodeProto:
        inits, extra, inputs = kernel_inputs(name, w)
        new_inits.extend(inits)
        prelude.extend(extra)
        return helper.make_node("MatMulNBits", [source, *inputs], [target], name=f"{name}.matmul_nbits",
                                domain=MS_DOMAIN, K=w.k, N=w.n, bits=w.bits, block_size=w.block_size,
                                accuracy_level=accuracy_level)

    if weight.tail is None:
        return [kernel(layer, weight, x, y)]
    tail = f"{layer}.tail"
    bounds = {"start": 0, "split": weight.k, "end": weight.k_total, "axis": -1}
    new_inits.extend(numpy_helper.from_array(np.array([v], np.int64), f"{layer}.cols_{k}") for k, v in bounds.items())
    return [helper.make_node("Slice", [x, f"{layer}.cols_start", f"{layer}.cols_split", f"{layer}.cols_axis"],
                             [f"{layer}.x_main"]),
            helper.make_node("Slice", [x, f"{layer}.cols_split", f"{layer}.cols_end", f"{layer}.cols_axis"],
                             [f"{tail}.x"]),
            kernel(layer, weight, f"{layer}.x_main", f"{layer}.y_main"),
            kernel(tail, weight.tail, f"{tail}.x", f"{tail}.y"),
            helper.make_node("Add", [f"{layer}.y_main", f"{tail}.y"], [y], name=f"{layer}.ragged_sum")]


def kernel_inputs(layer: str, weight: PackedWeight) -> tuple[list[onnx.TensorProto], list[onnx.NodeProto], list[str]]:
    """(initializers, nodes, [B, scales, zero_points] input names) of one MatMulNBits as the bundle stores it:
    fp16 scales widened by a Cast, or scales expanded from their quantized statistics."""
    inits = [numpy_helper.from_array(weight.data, f"{layer}.B"),
             numpy_helper.from_array(weight.packed_zero_points().reshape(-1), f"{layer}.zero_points")]
    zeros, nodes = f"{layer}.zero_points", []
    if weight.float_zero:  # real-valued zero points (HQQ): fp16 in the file, the kernel reads them as its scales' type
        zeros = f"{layer}.zero_points_f32"
        nodes.append(helper.make_node("Cast", [f"{layer}.zero_points"], [zeros], to=onnx.TensorProto.FLOAT))
    if weight.scale_stats is None:
        inits.append(numpy_helper.from_array(weight.scales.reshape(-1).astype(np.float16), f"{layer}.scales"))
        nodes.append(helper.make_node("Cast", [f"{layer}.scales"], [f"{layer}.scales_f32"], to=onnx.TensorProto.FLOAT))
        return inits, nodes, [f"{layer}.B", f"{layer}.scales_f32", zeros]
    stat_inits, stat_graph, scales = stat_nodes(f"{layer}.scale", weight.scale_stats, weight.n)
    return inits + stat_inits, nodes + stat_graph, [f"{layer}.B", scales, zeros]


def stat_nodes(prefix: str, stats: ScaleStats, n: int) -> tuple[list[onnx.TensorProto], list[onnx.NodeProto], str]:
    """Quantized statistics → the flat fp32 values [n · blocks]: unpack the 4-bit codes, code × step + min
    per chunk of rows (two fp32 operations, as `quant.layers.dequantize_stat` does them)."""
    chunks, blocks, _ = stats.stats.shape
    const = lambda name, value: numpy_helper.from_array(np.asarray(value), f"{prefix}.{name}")
    inits = [const("codes", stats.packed_codes()),
             const("min", np.ascontiguousarray(stats.stats[:, None, :, 0])),  # [chunks, 1, blocks]
             const("step", np.ascontiguousarray(stats.stats[:, None, :, 1])),
             const("sixteen", np.array(16, np.int32)),
             const("pairs_shape", np.array([chunks * stats.rows, -1], np.int64)),
             const("chunk_shape", np.array([chunks, stats.rows, -1], np.int64)),
             const("starts", np.array([0], np.int64)), const("ends", np.array([blocks], np.int64)),
             const("axis", np.array([1], np.int64)), const("rows_end", np.array([n], np.int64)),
             const("axis0", np.array([0], np.int64)), const("flat", np.array([-1], np.int64))]
    t = lambda name: f"{prefix}.{name}"
    op = helper.make_node
    nodes = [*_nibble_nodes(prefix, t("codes")),
             op("Reshape", [t("pairs"), t("pairs_shape")], [t("wide")]),
             op("Slice", [t("wide"), t("starts"), t("ends"), t("axis")], [t("codes2")]),
             op("Cast", [t("codes2")], [t("codes_f")], to=onnx.TensorProto.FLOAT),
             op("Reshape", [t("codes_f"), t("chunk_shape")], [t("by_chunk")]),
             op("Cast", [t("step")], [t("step_f")], to=onnx.TensorProto.FLOAT),
             op("Cast", [t("min")], [t("min_f")], to=onnx.TensorProto.FLOAT),
             op("Mul", [t("by_chunk"), t("step_f")], [t("scaled")]),
             op("Add", [t("scaled"), t("min_f")], [t("values3")]),
             op("Reshape", [t("values3"), t("pairs_shape")], [t("values")]),
             op("Slice", [t("values"), t("starts"), t("rows_end"), t("axis0")], [t("rows")]),
             op("Reshape", [t("rows"), t("flat")], [t("values_flat")])]
    return inits, nodes, t("values_flat")


def _nibble_nodes(prefix: str, packed: str) -> list[onnx.NodeProto]:
    """Two 4-bit values per byte (element 2i in the low nibble) → int32 `{prefix}.pairs` [..., bytes, 2].
    Needs the initializers `{prefix}.sixteen` (int32 16) and `{prefix}.flat` (int64 [-1])."""
    t = lambda name: f"{prefix}.{name}"
    op = helper.make_node
    return [op("Cast", [packed], [t("i32")], to=onnx.TensorProto.INT32),
            op("Mod", [t("i32"), t("sixteen")], [t("low")]),
            op("Div", [t("i32"), t("sixteen")], [t("high")]),
            op("Unsqueeze", [t("low"), t("flat")], [t("low3")]),
            op("Unsqueeze", [t("high"), t("flat")], [t("high3")]),
            op("Concat", [t("low3"), t("high3")], [t("pairs")], axis=-1)]


def quantize_initializers(model: onnx.ModelProto, names: set[str]) -> dict[str, int]:
    """Store each named fp32 initializer as symmetric int8 with one fp32 scale per row (axis 0), read back
    through a DequantizeLinear that produces the original tensor name; returns the new bytes per name."""
    stored, nodes, kept = {}, [], []
    for init in model.graph.initializer:
        if init.name not in names:
            kept.append(init)
            continue
        value = numpy_helper.to_array(init).astype(np.float32)
        rows = value.reshape(value.shape[0], -1)
        scale = np.maximum(np.abs(rows).max(axis=1), 1e-12) / 127
        codes = np.clip(np.round(rows / scale[:, None]), -127, 127).astype(np.int8).reshape(value.shape)
        kept += [numpy_helper.from_array(codes, f"{init.name}.int8"),
                 numpy_helper.from_array(scale.astype(np.float32), f"{init.name}.row_scale")]
        nodes.append(helper.make_node("DequantizeLinear", [f"{init.name}.int8", f"{init.name}.row_scale"],
                                      [init.name], name=f"{init.name}.dequantize", axis=0))
        stored[init.name] = codes.nbytes + scale.size * 4
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    rest = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes + rest)
    return stored


def conv_weights(model: onnx.ModelProto) -> set[str]:
    """Initializers read as a Conv's weight (the front end), found by wiring rather than by name."""
    inits = {t.name for t in model.graph.initializer}
    return {n.input[1] for n in model.graph.node if n.op_type == "Conv" and n.input[1] in inits}


def _lookup_nodes(node: onnx.NodeProto, head: PackedWeight | None, new_inits: list[onnx.TensorProto]) -> list[onnx.NodeProto]:
    """Token rows from the head's own storage, so the tied table is stored once."""
    ids, out = node.input[1], node.output[0]
    if head is None:
        # FP: the head keeps its [d, vocab] matrix; gather columns and move d last.
        cols = f"{out}.cols"
        return [helper.make_node("Gather", [f"{HEAD}.{MARKER}", ids], [cols], axis=1),
                helper.make_node("Transpose", [cols], [out], perm=[1, 2, 0])]
    if head.tail is None:
        return _lookup_part(HEAD, head, ids, out, new_inits)
    parts = [f"{out}.main", f"{out}.tail"]
    return (_lookup_part(HEAD, head, ids, parts[0], new_inits)
            + _lookup_part(f"{HEAD}.tail", head.tail, ids, parts[1], new_inits)
            + [helper.make_node("Concat", parts, [out], axis=-1)])


def _lookup_part(name: str, head: PackedWeight, ids: str, out: str, new_inits: list[onnx.TensorProto]) -> list[onnx.NodeProto]:
    """Rows of one packed kernel (`name`) as [batch, tokens, k]: its blocks as a third axis."""
    # The packed bytes [vocab, blocks, bytes] are the table itself; the kernel's fp16 scales, widened once.
    scales3, zeros3, blocks = f"{name}.scales3", f"{name}.zero_points3", f"{out}.blocks"
    shape3, shape = f"{name}.shape3", f"{out}.shape"
    # One zero point per (row, block) along a quantize axis of one element, each in its own byte: unpacked
    # at load from the kernel's packed zero points (stored once).
    new_inits += [numpy_helper.from_array(np.array([head.n, head.n_blocks, 1], dtype=np.int64), shape3),
                  numpy_helper.from_array(np.array([0, 0, head.n_blocks * head.block_size], dtype=np.int64), shape)]
    nodes = [helper.make_node("Reshape", [f"{name}.scales_f32", shape3], [scales3])]
    if head.bits == 4:
        z = f"{name}.zero_unpack"
        new_inits += [numpy_helper.from_array(np.array(16, np.int32), f"{z}.sixteen"),
                      numpy_helper.from_array(np.array([-1], np.int64), f"{z}.flat"),
                      numpy_helper.from_array(np.array([head.n, -1], np.int64), f"{z}.rows"),
                      *(numpy_helper.from_array(np.array([v], np.int64), f"{z}.{k}")
                        for k, v in (("start", 0), ("end", head.n_blocks), ("axis", 1)))]
        nodes += [*_nibble_nodes(z, f"{name}.zero_points"),
                  helper.make_node("Reshape", [f"{z}.pairs", f"{z}.rows"], [f"{z}.wide"]),
                  helper.make_node("Slice", [f"{z}.wide", f"{z}.start", f"{z}.end", f"{z}.axis"], [f"{z}.blocks"]),
                  helper.make_node("Cast", [f"{z}.blocks"], [f"{z}.u8"], to=onnx.TensorProto.UINT8),
                  helper.make_node("Reshape", [f"{z}.u8", shape3], [zeros3])]
    else:  # 8-bit zero points are one per byte already
        nodes.append(helper.make_node("Reshape", [f"{name}.zero_points", shape3], [zeros3]))
    nodes.append(helper.make_node("GatherBlockQuantized", [f"{name}.B", ids, scales3, zeros3], [blocks],
                                  domain=MS_DOMAIN, bits=head.bits, block_size=head.block_size, gather_axis=0,
                                  quantize_axis=2))
    if head.n_blocks * head.block_size == head.k:
        return nodes + [helper.make_node("Reshape", [blocks, shape], [out])]
    cut = [numpy_helper.from_array(np.array([v], np.int64), f"{name}.cut_{k}") for k, v in
           (("start", 0), ("end", head.k), ("axis", -1))]
    new_inits += cut
    return nodes + [helper.make_node("Reshape", [blocks, shape], [f"{out}.padded"]),
                    helper.make_node("Slice", [f"{out}.padded", *(t.name for t in cut)], [out])]


def check_complete(expected: dict[int, PackedWeight], done: set[int], names: dict[int, str]) -> None:
    """Every quantized layer must have become a MatMulNBits in some graph."""
    missing = [names[i] for i in expected if i not in done]
    if missing:
        raise CheckpointError(f"the traced graphs do not contain quantized layers {sorted(missing)[:5]}: the export "
                              "cannot place their codes; report this with the checkpoint's recipe")
