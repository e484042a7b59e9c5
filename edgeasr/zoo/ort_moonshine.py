"""Rebuild Moonshine tiny/base as a `transformers` model from ONNX Runtime `.ort` flatbuffer graphs.

No float Moonshine checkpoint exists on the registries: the only copies are 8-bit ORT graphs. Two
quantization schemes occur:

* base (moonshine-cpp): weight-only int8 with one scale and offset per tensor, dequantized inside the
  graph by Cast -> Mul(scale) -> Add(offset) chains; compute is fp32, so the dequantized weights
  reproduce the graph almost exactly.
* tiny (moonshine-voice): ORT dynamic quantization, uint8 weights with a per-tensor scale and zero
  point consumed by `DynamicQuantizeMatMul` / `MatMulIntegerToFloat`, which also quantize the
  *activations* at run time. A float model of the dequantized weights is therefore close to, but not
  bit-exact with, the graph.

Initializer names are mostly meaningless (`onnx::MatMul_2771_merged_0_quantized`), so each tensor is
named after the node that consumes it (`/model/decoder/layers.0/self_attn/q_proj/MatMul`). The graphs
were exported from the original Moonshine code, whose module names differ from transformers'
(`dense` -> `o_proj`, `up_proj` -> `fc1`, `down_proj` -> `fc2`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Data types used by the Moonshine graphs (onnx TensorProto numbering, which the ORT schema shares).
_DTYPES: dict[int, type] = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 9: np.bool_,
                            10: np.float16, 11: np.float64}

BOS_ID, EOS_ID, UNK_ID = 1, 2, 0

# Shapes of the published checkpoints. Tiny is MoonshineConfig's default shape; base must say
# partial_rotary_factor explicitly (the default 0.9 is tiny's). Both are checked against the tensors.
_CONFIGS: dict[str, dict] = {
    "tiny": dict(hidden_size=288, intermediate_size=1152, encoder_num_hidden_layers=6,
                 decoder_num_hidden_layers=6, encoder_num_attention_heads=8, decoder_num_attention_heads=8,
                 encoder_num_key_value_heads=8, decoder_num_key_value_heads=8, partial_rotary_factor=0.9),
    "base": dict(hidden_size=416, intermediate_size=1664, encoder_num_hidden_layers=8,
                 decoder_num_hidden_layers=8, encoder_num_attention_heads=8, decoder_num_attention_heads=8,
                 encoder_num_key_value_heads=8, decoder_num_key_value_heads=8, partial_rotary_factor=0.62),
}

_LINEAR = {"q_proj", "k_proj", "v_proj", "o_proj", "dense", "fc1", "fc2", "up_proj", "down_proj"}
_NORMS = {"input_layernorm", "post_attention_layernorm", "final_layernorm", "layer_norm", "norm"}
_FINAL_NORM = {"model.encoder": "layer_norm", "model.decoder": "norm"}
_RENAMES = [(".dense.", ".o_proj."), (".mlp.up_proj.", ".mlp.fc1."), (".mlp.down_proj.", ".mlp.fc2.")]


@dataclass
class OrtNode:
    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)
    subgraphs: dict[str, "OrtGraph"] = field(default_factory=dict)


@dataclass
class OrtGraph:
    initializers: dict[str, np.ndarray]
    nodes: list[OrtNode]
    inputs: list[str]
    outputs: list[str]


# ----------------------------------------------------------------------------------------- reading
def _tensor(t) -> np.ndarray:
    dims = [int(d) for d in t.DimsAsNumpy()] if t.DimsLength() else []
    if t.ExternalDataOffset() >= 0:
        raise ValueError(f"tensor {t.Name().decode()} uses external data, which these graphs never do")
    raw = b"" if t.RawDataIsNone() else t.RawDataAsNumpy().tobytes()
    return np.frombuffer(raw, dtype=_DTYPES[t.DataType()]).reshape(dims)


def _graph(g) -> OrtGraph:
    inits = {}
    for i in range(g.InitializersLength()):
        t = g.Initializers(i)
        inits[t.Name().decode()] = _tensor(t)
    nodes = []
    for i in range(g.NodesLength()):
        n = g.Nodes(i)
        attrs, subs = {}, {}
        for j in range(n.AttributesLength()):
            a = n.Attributes(j)
            key, kind = a.Name().decode(), a.Type()
            if kind == 1:
                attrs[key] = a.F()
            elif kind == 2:
                attrs[key] = a.I()
            elif kind == 3:
                attrs[key] = a.S().decode()
            elif kind == 4:
                attrs[key] = _tensor(a.T())
            elif kind == 5:
                subs[key] = _graph(a.G())
            elif kind == 6:
                attrs[key] = a.FloatsAsNumpy().tolist()
            elif kind == 7:
                attrs[key] = a.IntsAsNumpy().tolist()
        nodes.append(OrtNode(n.Name().decode(), n.OpType().decode(),
                             [n.Inputs(j).decode() for j in range(n.InputsLength())],
                             [n.Outputs(j).decode() for j in range(n.OutputsLength())], attrs, subs))
    return OrtGraph(inits, nodes, [g.Inputs(i).decode() for i in range(g.InputsLength())],
                    [g.Outputs(i).decode() for i in range(g.OutputsLength())])


def read_ort(path: Path) -> OrtGraph:
    """Parse an `.ort` file with the flatbuffer readers onnxruntime ships (schema of its own version)."""
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py import fbs

    buf = Path(path).read_bytes()
    if not fbs.InferenceSession.InferenceSession.InferenceSessionBufferHasIdentifier(buf, 0):
        raise ValueError(f"{path} is not an ONNX Runtime .ort file")
    session = fbs.InferenceSession.InferenceSession.GetRootAs(buf, 0)
    return _graph(session.Model().Graph())


# -------------------------------------------------------------------------------------- constants
def _inline(graph: OrtGraph) -> tuple[dict[str, np.ndarray], list[OrtNode]]:
    """Constants and nodes of a graph, with a merged decoder's `If` replaced by its no-cache branch.

    The no-cache ("else") branch computes everything, cross-attention K/V projections included; the
    dequantization chains of the base model sit in the outer graph and feed both branches.
    """
    consts = {k: v for k, v in graph.initializers.items()}
    nodes: list[OrtNode] = []
    for node in graph.nodes:
        if node.op == "If":
            branch = node.subgraphs["else_branch"]
            consts.update(branch.initializers)
            nodes.extend(branch.nodes)
        else:
            nodes.append(node)
    return consts, nodes


def _dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None) -> np.ndarray:
    zp = 0.0 if zero_point is None else zero_point.astype(np.float64)
    return ((q.astype(np.float64) - zp) * scale.astype(np.float64)).astype(np.float32)


def _fold(consts: dict[str, np.ndarray], nodes: list[OrtNode]) -> None:
    """Evaluate the weight-dequantization chains (Cast/Mul/Add/Transpose of initializers) in place.

    Computed in float32 as the graph does, so the folded weights equal what ORT multiplies with.
    """
    for node in nodes:
        if not all(i in consts for i in node.inputs if i) or not node.inputs:
            continue
        x = [consts[i] for i in node.inputs if i]
        if node.op == "Cast" and node.attrs.get("to") == 1:
            consts[node.outputs[0]] = x[0].astype(np.float32)
        elif node.op == "Mul" and x[0].dtype == np.float32 and x[1].dtype == np.float32:
            consts[node.outputs[0]] = x[0] * x[1]
        elif node.op == "Add" and x[0].dtype == np.float32 and x[1].dtype == np.float32:
            consts[node.outputs[0]] = x[0] + x[1]
        elif node.op == "Transpose":
            consts[node.outputs[0]] = np.transpose(x[0], node.attrs.get("perm"))
        elif node.op == "DequantizeLinear" and x[0].ndim >= 1 and x[1].ndim == 0:
            consts[node.outputs[0]] = _dequantize(x[0], x[1], x[2] if len(x) > 2 else None)


def _module_path(node_name: str, root: str) -> tuple[str, str] | None:
    """Map a node name like `/model/decoder/layers.0/mlp/up_proj/MatMul` to (module path, leaf)."""
    parts = [p for p in node_name.split("/") if p]
    if len(parts) < 2:
        return None
    path = ".".join(parts[:-1])
    if not path.startswith("model.") and path != "proj_out":  # proj_out sits at the top level in both
        path = f"{root}.{path}"
    for old, new in _RENAMES:
        path = (path + ".").replace(old, new)[:-1]
    return path, parts[-2]


def _require_zero(arr: np.ndarray, what: str) -> None:
    if np.any(arr != 0):
        raise ValueError(f"{what} is not zero (max |x| {np.abs(arr).max():g}); Moonshine's norms have no bias")


def extract_weights(graph: OrtGraph, root: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Name every weight of `graph` after its consumer; return (state dict, extras for checks).

    `root` is `model.encoder` for the encoder graph (whose node names carry no prefix). The decoder's
    `proj_out.weight` is returned too, so the caller can check that tying it to the embedding is right.
    Extras hold what has no slot in transformers but must agree with it (the rotary frequencies).
    """
    consts, nodes = _inline(graph)
    _fold(consts, nodes)
    out: dict[str, np.ndarray] = {}
    extras: dict[str, np.ndarray] = {}

    def put(key: str, value: np.ndarray) -> None:
        if key in out and not np.array_equal(out[key], value):
            raise ValueError(f"two different tensors map to {key}")
        out[key] = np.ascontiguousarray(value, dtype=np.float32)

    def const(name: str) -> np.ndarray | None:
        return consts.get(name) if name else None

    for node in nodes:
        mapped = _module_path(node.name, root)
        if mapped is None and node.op == "SkipLayerNormalization" and node.outputs[0] in graph.outputs:
            # ORT fused the last residual add with the final norm and dropped the module path from the
            # name; the node that writes the graph's output is that final norm.
            leaf = _FINAL_NORM[root]
            mapped = f"{root}.{leaf}", leaf
        if mapped is None:
            continue
        path, leaf = mapped
        ins = [const(i) for i in node.inputs]
        if leaf == "rotary_emb":
            # inv_freq, shape (1, n, 1): checked against transformers' own to verify the rotary config.
            for v in ins:
                if v is not None and v.dtype == np.float32 and v.ndim == 3 and v.shape[0] == 1 and v.shape[2] == 1:
                    extras["inv_freq"] = v.reshape(-1)
            continue
        if node.op == "MatMul" and leaf in _LINEAR | {"proj_out"} and ins[1] is not None:
            put(f"{path}.weight", ins[1].T)  # MatMul computes x @ W; nn.Linear stores W.T
        elif node.op == "DynamicQuantizeMatMul" and ins[1] is not None:
            put(f"{path}.weight", _dequantize(ins[1], ins[2], ins[3]).T)
            if len(ins) > 4 and ins[4] is not None:
                put(f"{path}.bias", ins[4])
        elif node.op == "MatMulIntegerToFloat" and ins[1] is not None:
            put(f"{path}.weight", _dequantize(ins[1], ins[3], ins[5] if len(ins) > 5 else None).T)
            if len(ins) > 6 and ins[6] is not None:
                put(f"{path}.bias", ins[6])
        elif node.op == "Add" and leaf in _LINEAR:
            bias = next((v for v in ins if v is not None and v.ndim == 1), None)
            if bias is not None:
                put(f"{path}.bias", bias)
        elif node.op in ("Conv", "FusedConv"):
            put(f"{path}.weight", ins[1])
            if len(ins) > 2 and ins[2] is not None:
                put(f"{path}.bias", ins[2])
        elif leaf == "groupnorm" and node.op == "InstanceNormalization":
            # Must be affine-free, or the Mul/Add below would not be the whole GroupNorm affine.
            if not (np.all(ins[1] == 1) and np.all(ins[2] == 0)):
                raise ValueError("groupnorm's InstanceNormalization carries its own affine: unexpected export")
        elif leaf == "groupnorm" and node.op in ("Mul", "Add"):
            # GroupNorm(1) is exported as InstanceNormalization over one group with unit affine,
            # followed by the per-channel affine as Mul/Add with (C, 1) initializers.
            value = next((v for v in ins if v is not None and v.ndim == 2), None)
            if value is not None:
                put(f"{path}.{'weight' if node.op == 'Mul' else 'bias'}", value.reshape(-1))
        elif leaf in _NORMS and node.op == "Mul":
            gamma = next((v for v in ins if v is not None and v.ndim == 1 and v.size > 1), None)
            if gamma is not None:
                put(f"{path}.weight", gamma)
        elif leaf in _NORMS and node.op == "LayerNormalization":
            put(f"{path}.weight", ins[1])
            if len(ins) > 2 and ins[2] is not None:
                _require_zero(ins[2], f"{path} bias")
        elif node.op == "SkipLayerNormalization" and leaf in _NORMS:
            put(f"{path}.weight", ins[2])
            for extra in ins[3:]:
                if extra is not None:
                    _require_zero(extra, f"{path} beta/bias")
        elif node.op == "Gather" and leaf == "embed_tokens" and ins[0] is not None and ins[0].ndim == 2:
            table = ins[0]
            if table.dtype != np.float32:
                # tiny gathers quantized rows and dequantizes them after: use that node's scale.
                dq = next(n for n in nodes if n.op == "DequantizeLinear" and n.inputs[0] == node.outputs[0])
                table = _dequantize(table, consts[dq.inputs[1]], const(dq.inputs[2]) if len(dq.inputs) > 2 else None)
            put(f"{path}.weight", table)
    return out, extras


# ------------------------------------------------------------------------------------------ output
def _write_tokenizer(tokenizer_json: Path, out_dir: Path) -> None:
    vocab = json.loads(Path(tokenizer_json).read_text())
    specials = {t["id"]: t["content"] for t in vocab["added_tokens"]}
    if (specials.get(UNK_ID), specials.get(BOS_ID), specials.get(EOS_ID)) != ("<unk>", "<s>", "</s>"):
        raise ValueError(f"{tokenizer_json} does not have <unk>/<s>/</s> at ids 0/1/2")
    shutil.copy(tokenizer_json, out_dir / "tokenizer.json")
    tokens = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 512, "clean_up_tokenization_spaces": False,
         **tokens}, indent=1))
    (out_dir / "special_tokens_map.json").write_text(json.dumps(tokens, indent=1))


def convert_ort_moonshine(encoder: Path, decoder: Path, tokenizer_json: Path, out_dir: Path, size: str) -> None:
    """Write a complete, offline-loadable `transformers` Moonshine directory into `out_dir`.

    Weights are the dequantized 8-bit ones in fp32 (no float original exists); the model loads
    strictly and its rotary frequencies and tied output projection are checked against the graphs.
    """
    import torch
    from transformers import (GenerationConfig, MoonshineConfig, MoonshineForConditionalGeneration,
                              Wav2Vec2FeatureExtractor)

    if size not in _CONFIGS:
        raise ValueError(f"unknown Moonshine size {size!r}; expected one of {sorted(_CONFIGS)}")
    out_dir = Path(out_dir)
    shape = dict(_CONFIGS[size])
    rotary = shape.pop("partial_rotary_factor")
    config = MoonshineConfig(**shape, vocab_size=32768, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
                             decoder_start_token_id=BOS_ID, pad_token_id=EOS_ID, tie_word_embeddings=True,
                             rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                              "partial_rotary_factor": rotary})

    enc, enc_extra = extract_weights(read_ort(encoder), "model.encoder")
    dec, dec_extra = extract_weights(read_ort(decoder), "model.decoder")
    state = {**enc, **dec}
    # The output projection is tied to the embedding. base's graph multiplies by the transposed
    # embedding itself; tiny's holds a second quantized copy, which is bit-identical: check, then tie.
    proj = state.pop("proj_out.weight", None)
    embed = state["model.decoder.embed_tokens.weight"]
    if proj is not None and (proj.shape != embed.shape or not np.allclose(proj, embed, rtol=0, atol=1e-6)):
        raise ValueError("the graph's output projection is not the token embedding: cannot tie them")
    state["proj_out.weight"] = embed

    model = MoonshineForConditionalGeneration(config)  # 27-62 M parameters: cheap to build on CPU
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"weight mapping incomplete: missing {missing[:8]}, unexpected {unexpected[:8]}")
    for key, value in state.items():
        if tuple(expected[key].shape) != value.shape:
            raise ValueError(f"{key}: graph has {value.shape}, {size} config expects {tuple(expected[key].shape)}")
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()}, strict=True)
    # The graphs bake the rotary frequencies in: matching them validates head_dim and partial_rotary_factor.
    for extra, rope in ((enc_extra, model.model.encoder.rotary_emb), (dec_extra, model.model.decoder.rotary_emb)):
        if "inv_freq" not in extra:
            raise ValueError("no rotary frequencies found in the graph: unexpected export")
        if not np.allclose(extra["inv_freq"], rope.inv_freq.numpy(), rtol=1e-5):
            raise ValueError(f"rotary frequencies of the graph do not match partial_rotary_factor={rotary}")

    model.generation_config = GenerationConfig(decoder_start_token_id=BOS_ID, bos_token_id=BOS_ID,
                                               eos_token_id=EOS_ID, pad_token_id=EOS_ID)
    model.save_pretrained(out_dir, safe_serialization=True)
    _write_tokenizer(tokenizer_json, out_dir)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=False,
                             return_attention_mask=True).save_pretrained(out_dir)


__all__ = ["convert_ort_moonshine", "read_ort", "extract_weights", "OrtGraph", "OrtNode"]
