"""Shared helpers of the bundle tests: checkpoints of any recipe, the fake-quant reference of a checkpoint,
numeric and transcript comparison of a bundle against it, the packed codes, and the graphs' structure."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from edgeasr.backends.hf import HFBackend
from edgeasr.engine import Engine
from edgeasr.metrics.wer import utterance_wer
from edgeasr.quant.calibrate import CalibrationClip
from edgeasr.quant.checkpoint import save_checkpoint
from edgeasr.quant.layers import QuantLinear
from edgeasr.quant.recipe import CalibrationOptions, Recipe
from edgeasr.runtime import OnnxBackend
from edgeasr.runtime.bundle import read_bundle
from edgeasr.zoo import resolve_model_dir
from quant_support import SMALL_CALIBRATION, quantized


def quantized_checkpoint(target: Path, model: str, method: str, w_bits: int, a_bits: int = 16,
                         calibration: CalibrationOptions = SMALL_CALIBRATION, **options) -> Path:
    """`quantized(...)` (shared with the method tests of the same session) saved as a checkpoint, as
    `quantize_to_checkpoint` saves one: the export reads checkpoints, not live models."""
    backend = quantized(model, method, w_bits, a_bits, calibration=calibration, **options)
    recipe = Recipe(model, method, w_bits, a_bits, calibration=calibration, options=options)
    source, _ = resolve_model_dir(model)
    return save_checkpoint(backend.model, recipe, Path(source), target)


def checkpoint_backend(checkpoint: Path) -> HFBackend:
    """The fake-quant model of a checkpoint, as `Engine.load` runs it: the reference a bundle must match."""
    return Engine.load(checkpoint).backend


@torch.inference_mode()
def bundle_errors(reference: HFBackend, runtime: OnnxBackend,
                  clips: Sequence[CalibrationClip]) -> dict[str, list[float]]:
    """Per clip, the relative error of the bundle's encoder states and of its decoder logits, teacher-forced
    on the clip's reference text (every position, through the KV-cached step graph), against `reference`."""
    rel = lambda got, expected: float(np.linalg.norm(got - expected) / np.linalg.norm(expected))
    errors: dict[str, list[float]] = {"encoder": [], "logits": []}
    for clip in clips:
        ids = list(reference.settings.prompt) + reference.tokenizer(" " + clip.text, add_special_tokens=False).input_ids
        encoded = reference.encode(clip.audio)
        expected = reference.model(encoder_outputs=encoded, decoder_input_ids=torch.tensor([ids]),
                                   use_cache=False).logits[0].numpy()
        states = runtime.sessions["encoder"].run(None, {"features": runtime.features(clip.audio)})[0]
        errors["encoder"].append(rel(states, encoded.last_hidden_state.numpy()))
        errors["logits"].append(rel(runtime.decoder_step(runtime.encode(clip.audio))(ids), expected))
    return errors


def transcript_edits(reference: HFBackend, runtime: OnnxBackend,
                     audios: Mapping[str, np.ndarray]) -> dict[str, tuple[int, str, str]]:
    """Per clip: normalized word edits of the bundle's greedy transcript against the fake-quant model's, and both."""
    out = {}
    for name, audio in audios.items():
        theirs = Engine(reference, "fake-quant").transcribe(audio).text
        ours = Engine(runtime, "bundle").transcribe(audio).text
        wer = utterance_wer(theirs, ours)
        out[name] = (wer.substitutions + wer.deletions + wer.insertions, ours, theirs)
    return out


def quant_layers(model: torch.nn.Module) -> dict[str, QuantLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}


def bundle_initializers(bundle: Path) -> dict[str, dict[str, np.ndarray]]:
    """graph name → initializer name → value (external data read in)."""
    meta = read_bundle(bundle, verify=False).data
    return {g: {t.name: numpy_helper.to_array(t) for t in onnx.load(bundle / f).graph.initializer}
            for g, f in meta["graphs"].items()}


def unpack_rows(packed: np.ndarray, width: int, n_rows: int, n_values: int) -> np.ndarray:
    """MatMulNBits' packed zero points: `width`-bit values, low bits first, each row padded to whole bytes."""
    bits = np.unpackbits(packed[:, None], axis=1, bitorder="little")
    per_row = -(-n_values * width // 8)
    values = bits.reshape(n_rows, per_row * 8 // width, width) @ (1 << np.arange(width))
    return values[:, :n_values]


def assert_bundle_holds_codes(model: torch.nn.Module, bundle: Path) -> None:
    """Every QuantLinear's codes, scales and zero points read back unchanged from its MatMulNBits inputs."""
    from edgeasr.export.packing import PackedWeight, unpack

    meta = read_bundle(bundle).data
    inits = bundle_initializers(bundle)
    layers = quant_layers(model)
    assert set(layers) == set(meta["weights"]["layers"])
    for name, layer in layers.items():
        record = meta["weights"]["layers"][name]
        graph, node = inits[record["graph"]], record["node"]
        # A ragged last group is a kernel of its own ("{node}.tail"): read both and join them.
        kernels = [(node, record["k"], record["block_size"])]
        if record.get("tail"):
            kernels.append((f"{node}.tail", record["tail"]["k"], record["tail"]["block_size"]))
        codes, scales, zeros = [], [], []
        for prefix, k, block in kernels:
            scale = graph[f"{prefix}.scales"].reshape(record["n"], -1)
            codes.append(unpack(PackedWeight(record["bits"], record["storage_bits"], block, k, record["n"],
                                             graph[f"{prefix}.B"], scale, np.zeros(0, np.uint8))))
            scales.append(scale)
            stored = graph[f"{prefix}.zero_points"]
            zeros.append(stored.reshape(record["n"], -1) if record.get("float_zero") else
                         unpack_rows(stored, record["storage_bits"], record["n"], scale.shape[1]))
        assert np.array_equal(np.concatenate(codes, axis=1), layer.codes.numpy()), name
        # fp16 as stored; the layer's scales are fp16 numbers, so the widened values are its own
        assert np.array_equal(np.concatenate(scales, axis=1).astype(np.float32), layer.scale.numpy()), name
        assert np.array_equal(np.concatenate(zeros, axis=1), layer.zero.numpy()), name


class GraphIndex:
    """One ONNX graph with its producer / consumer links, to find the nodes around a layer's kernel."""

    def __init__(self, path: Path) -> None:
        self.graph = onnx.load(path, load_external_data=False).graph
        self.producer = {out: n for n in self.graph.node for out in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.by_name = {n.name: n for n in self.graph.node}
        self.initializers = {t.name for t in self.graph.initializer}

    def kernel(self, node_path: str) -> onnx.NodeProto:
        """The MatMulNBits the exporter made for the stand-in at `node_path` (named by the rewrite); for a layer
        split at a ragged last group, the Add of its two kernels stands for it (its input: the main kernel's)."""
        kernel = self.by_name[f"{node_path}.matmul_nbits"]
        total = self.by_name.get(f"{node_path}.ragged_sum")
        if total is None:
            return kernel
        joined = onnx.NodeProto()
        joined.CopyFrom(total)
        del joined.input[:]
        joined.input.extend([self.producer[kernel.input[0]].input[0]])  # the layer's input, before the Slice
        return joined

    def kernel_bits(self, node_path: str) -> int:
        """The container width MatMulNBits unpacks for that layer (its `bits` attribute)."""
        kernel = self.by_name[f"{node_path}.matmul_nbits"]
        return next(helper.get_attribute_value(a) for a in kernel.attribute if a.name == "bits")

    def upstream(self, tensor: str, hops: int) -> list[onnx.NodeProto]:
        """Nodes computing `tensor`, at most `hops` nodes back."""
        found, frontier, seen = [], [tensor], {tensor}
        for _ in range(hops):
            step = list({id(self.producer[t]): self.producer[t] for t in frontier if t in self.producer}.values())
            found += step
            frontier = [i for n in step for i in n.input if i not in seen]
            seen.update(frontier)
        return found

    def downstream(self, tensor: str, hops: int) -> list[onnx.NodeProto]:
        """Nodes reading `tensor`, at most `hops` nodes on."""
        found, frontier = [], [tensor]
        for _ in range(hops):
            step = [n for t in frontier for n in self.consumers.get(t, [])]
            found += step
            frontier = [o for n in step for o in n.output]
        return found


@dataclass(frozen=True)
class Evidence:
    """A node of type `op` reading an initializer matching `tensor` ("{node}" = the layer's stand-in path),
    placed `where`: "before" the kernel (on its input), "added" to the kernel's output, "scattered" onto it, or fed
    "from" the tensor."""

    op: str
    tensor: str
    where: str


CARRIED: dict[str, tuple[Evidence, ...]] = {
    "in_scale": (Evidence("Div", "{node}.layer.in_scale", "before"),),
    "in_shift": (Evidence("Sub", "{node}.layer.in_shift", "before"),),
    # The butterfly's last op scales by 1/√n: one constant per input width, named after the first layer that traced it.
    "hadamard": (Evidence("Mul", "*.hadamard.scale", "before"),),
    # The FP branch on the gathered channels, and the mask that keeps them out of the int8 activation grid.
    "outlier_idx": (Evidence("GatherND", "{node}.layer.outlier_idx", "from"),
                    Evidence("MatMul", "{node}.layer.outlier_weight", "added"),
                    Evidence("Mul", "{node}.outlier_mask", "before")),
    # fp16 outliers gathered by column, scaled, and scatter-added onto the kernel's output rows.
    "sparse_idx": (Evidence("Mul", "{node}.sparse_val", "scattered"),),
}
"""How each QuantLinear extra must appear around the layer's MatMulNBits node."""


BEFORE_HOPS = 64
"""Nodes a `before` extra may sit ahead of its kernel: a Hadamard butterfly of 1,536 inputs is ~40 nodes deep."""


def carries(index: GraphIndex, node_path: str, evidence: Evidence) -> bool:
    """Whether the graph applies `evidence` to the layer at `node_path`."""
    kernel = index.kernel(node_path)
    pattern = evidence.tensor.format(node=node_path)
    reads = lambda n: any(fnmatch(i, pattern) and i in index.initializers for i in n.input)
    if evidence.where == "before":
        # A rotated layer (QuaRot) applies its input scale ahead of its Hadamard butterfly: look back past it.
        return any(n.op_type == evidence.op and reads(n) for n in index.upstream(kernel.input[0], BEFORE_HOPS))
    tensors = [t for t in index.initializers if fnmatch(t, pattern)]
    if evidence.where == "from":
        return any(n.op_type == evidence.op for t in tensors for n in index.downstream(t, 4))
    branch = [n for t in tensors for n in index.downstream(t, 2) if n.op_type == evidence.op]
    if evidence.where == "scattered":
        # index_add on the last axis exports as Transpose → ScatterND → Transpose, and a ragged layer's kernel
        # output is first summed with its tail kernel's: the scatter's data must come from the kernel within 3 nodes.
        scatters = [s for n in branch for s in index.downstream(n.output[0], 3) if s.op_type.startswith("Scatter")]
        return any(kernel.name in {u.name for u in index.upstream(s.input[0], 3)} for s in scatters)
    return any(c.op_type == "Add" and kernel.output[0] in c.input for n in branch for c in index.consumers[n.output[0]])


def layer_extras(model: torch.nn.Module) -> dict[str, set[str]]:
    """Extras of every QuantLinear of the (fake-quant) checkpoint model, by the names the bundle uses."""
    return {name: {e for e in ("in_scale", "in_shift", "outlier_idx", "sparse_idx") if getattr(m, e) is not None}
            | ({"hadamard"} if m.hadamard else set()) for name, m in quant_layers(model).items()}
