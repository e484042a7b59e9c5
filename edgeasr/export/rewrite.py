"""Turn the traced graphs' marked MatMuls and Gathers into packed ONNX Runtime ops.

`MatMul(x, <layer>.qweight_t)` → `MatMulNBits(x, B, scales, zero_points)` from the layer's own codes;
`Gather(<...>.qtable, ids)` → `GatherBlockQuantized` over the head's packed bytes (one copy of the tied
table on disk), or with an FP head a Gather along axis 1 of the head's [d, vocab] matrix.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeasr.errors import CheckpointError
from edgeasr.export.graphs import MARKER, TABLE
from edgeasr.export.packing import PackedWeight

MS_DOMAIN = "com.microsoft"
HEAD = "head"


def _layer_of(initializer: str, suffix: str) -> str | None:
    return initializer[: -len(suffix) - 1] if initializer.endswith("." + suffix) else None


def rewrite_graph(model: onnx.ModelProto, packed: dict[str, PackedWeight | None], accuracy_level: int) -> set[str]:
    """Rewrite `model` in place; `packed` maps a stand-in's path (as traced) to its weight, None = keep FP.

    Returns the layer paths that were rewritten, so the caller can check none was missed.
    """
    nodes, done, drop = [], set(), set()
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
            new_inits += packed_initializers(layer, weight)
            nodes.append(helper.make_node(
                "MatMulNBits", [node.input[0], f"{layer}.B", f"{layer}.scales", f"{layer}.zero_points"],
                list(node.output), name=f"{layer}.matmul_nbits", domain=MS_DOMAIN, K=weight.k, N=weight.n,
                bits=weight.bits, block_size=weight.block_size, accuracy_level=accuracy_level))
        elif table is not None and HEAD in packed:
            done.add(table)
            drop.add(node.input[0])
            nodes += _lookup_nodes(node, packed[HEAD], new_inits)
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    kept = [t for t in model.graph.initializer if t.name not in drop]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + new_inits)
    if any(n.domain == MS_DOMAIN for n in nodes) and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return done


def packed_initializers(layer: str, weight: PackedWeight) -> list[onnx.TensorProto]:
    """MatMulNBits' B / scales / zero_points initializers of one packed weight, named after `layer`."""
    return [numpy_helper.from_array(weight.data, f"{layer}.B"),
            numpy_helper.from_array(weight.scales.reshape(-1), f"{layer}.scales"),
            numpy_helper.from_array(weight.packed_zero_points().reshape(-1), f"{layer}.zero_points")]


def _lookup_nodes(node: onnx.NodeProto, head: PackedWeight | None, new_inits: list[onnx.TensorProto]) -> list[onnx.NodeProto]:
    """Token rows from the head's own storage, so the tied table is stored once."""
    ids, out = node.input[1], node.output[0]
    if head is None:
        # FP: the head keeps its [d, vocab] matrix; gather columns and move d last.
        cols = f"{out}.cols"
        return [helper.make_node("Gather", [f"{HEAD}.{MARKER}", ids], [cols], axis=1),
                helper.make_node("Transpose", [cols], [out], perm=[1, 2, 0])]
    # Blocks as a third axis: the packed head bytes [vocab, blocks, bytes] are the table itself.
    scales3, zeros3, blocks = f"{HEAD}.scales3", f"{HEAD}.zero_points3", f"{out}.blocks"
    shape3, shape = f"{HEAD}.shape3", f"{out}.shape"
    # One zero point per (row, block) along a quantize axis of one element: each in its own byte.
    new_inits += [numpy_helper.from_array(head.zero_points[..., None].astype(np.uint8), zeros3),
                  numpy_helper.from_array(np.array([head.n, head.n_blocks, 1], dtype=np.int64), shape3),
                  numpy_helper.from_array(np.array([0, 0, head.k], dtype=np.int64), shape)]
    return [helper.make_node("Reshape", [f"{HEAD}.scales", shape3], [scales3]),  # the head's scales, viewed 3-D
            helper.make_node("GatherBlockQuantized", [f"{HEAD}.B", ids, scales3, zeros3], [blocks],
                             domain=MS_DOMAIN, bits=head.bits, block_size=head.block_size, gather_axis=0,
                             quantize_axis=2),
            helper.make_node("Reshape", [blocks, shape], [out])]


def check_complete(expected: dict[int, PackedWeight], done: set[int], names: dict[int, str]) -> None:
    """Every quantized layer must have become a MatMulNBits in some graph."""
    missing = [names[i] for i in expected if i not in done]
    if missing:
        raise CheckpointError(f"the traced graphs do not contain quantized layers {sorted(missing)[:5]}: the export "
                              "cannot place their codes; report this with the checkpoint's recipe")
