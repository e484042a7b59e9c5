"""Torch modules traced into the bundle's three ONNX graphs, and the stand-ins for quantized layers.

Every QuantLinear (and the tied head / embedding) is swapped for a stand-in whose quantized matmul is
a plain MatMul on a marker parameter named `*.qweight_t`; `rewrite.py` then replaces each marked
MatMul by `MatMulNBits` built from the checkpoint's own codes. The marker holds the dequantized weight,
so the graph before rewriting is exactly the fake-quant model and tracing sees real values.
Everything else a method adds (input shift/scale, Hadamard rotation, FP outlier channels, sparse
corrections) is traced as ordinary ONNX ops around that MatMul.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgeasr.quant.hadamard import HadamardTransform
from edgeasr.quant.layers import QuantLinear

MARKER = "qweight_t"
"""Parameter name whose MatMul the rewrite turns into MatMulNBits."""
TABLE = "qtable"
"""Parameter name of the token table whose Gather becomes GatherBlockQuantized."""


class LinearStandIn(nn.Module):
    """A QuantLinear's forward with the quantized matmul isolated as MatMul(x, qweight_t)."""

    def __init__(self, layer: QuantLinear) -> None:
        super().__init__()
        self.layer = layer
        grid = _grid_weight(layer)
        self.qweight_t = nn.Parameter(grid.T.contiguous(), requires_grad=False)
        # Sparse FP corrections (SpQR) stay sparse: their fp16 values and 16-bit row/column indices are
        # gathered, multiplied and scatter-added onto the packed matmul's output (O(nnz) per input row).
        self.sparse = layer.sparse_val is not None
        if self.sparse:
            self.sparse_rows = nn.Parameter(layer.sparse_idx[0].clone(), requires_grad=False)
            self.sparse_cols = nn.Parameter(layer.sparse_idx[1].clone(), requires_grad=False)
            self.sparse_val = nn.Parameter(layer.sparse_val.clone(), requires_grad=False)
        # QuaRot's online rotation as a butterfly of adds (edgeasr.quant.hadamard), never a dense d × d MatMul.
        self.hadamard = HadamardTransform(layer.in_features) if layer.hadamard else None
        # FP outlier channels (QUIK) are zeroed before the packed matmul, as QuantLinear does before its
        # activation grid: MatMulNBits quantizes its input to int8 per block, and an outlier left in would
        # stretch its block's grid (their weight codes sit at the zero point, so only the grid changes).
        keep = None
        if layer.outlier_idx is not None:
            keep = torch.ones(layer.in_features).index_fill(0, layer.outlier_idx, 0.0)
        self.register_buffer("outlier_mask", keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        if layer.in_shift is not None:
            x = x - layer.in_shift
        if layer.in_scale is not None:
            x = x / layer.in_scale
        if self.hadamard is not None:
            x = self.hadamard(x)
        outliers = None
        if layer.outlier_idx is not None:
            outliers = torch.matmul(x[..., layer.outlier_idx], layer.outlier_weight.T)
            x = x * self.outlier_mask
        y = torch.matmul(x, self.qweight_t)
        if self.sparse:
            contributions = x[..., self.sparse_cols.long()] * self.sparse_val.float()
            y = y.index_add(-1, self.sparse_rows.long(), contributions)
        if outliers is not None:
            y = y + outliers
        return y if layer.bias is None else y + layer.bias


def _grid_weight(layer: QuantLinear) -> torch.Tensor:
    from edgeasr.quant.spec import dequantize_weight

    return dequantize_weight(layer.codes, layer.scale, layer.zero.float(), layer.w_spec)


class HeadStandIn(nn.Module):
    """The output projection on the (tied) token table: MatMul(x, qtable^T) marked for the rewrite."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.qweight_t = nn.Parameter(table.T.contiguous(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, self.qweight_t)


class EmbeddingStandIn(nn.Module):
    """Token lookup as Gather(qtable, ids), marked so the rewrite can point it at the packed head."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.qtable = nn.Parameter(table.contiguous(), requires_grad=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.qtable)


@dataclass(frozen=True)
class Shapes:
    """What the runtime must know about the graphs' tensors."""

    layers: int
    heads: int
    head_dim: int
    d_model: int
    vocab: int


def shapes_of(model: nn.Module) -> Shapes:
    c = model.config
    if c.model_type == "whisper":
        return Shapes(c.decoder_layers, c.decoder_attention_heads, c.d_model // c.decoder_attention_heads,
                      c.d_model, c.vocab_size)
    heads = c.decoder_num_key_value_heads
    return Shapes(c.decoder_num_hidden_layers, heads, c.hidden_size // c.decoder_num_attention_heads,
                  c.hidden_size, c.vocab_size)


class EncoderGraph(nn.Module):
    """features (Whisper log-mel [1, 80, 3000]; Moonshine waveform [1, samples]) → encoder states."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.encoder = model.model.encoder

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.encoder(features).last_hidden_state


class CrossKVGraph(nn.Module):
    """Encoder states → every decoder layer's cross-attention K and V, computed once per utterance."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.attns = nn.ModuleList(layer.encoder_attn for layer in model.model.decoder.layers)
        self.shapes = shapes_of(model)

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s = self.shapes
        out = []
        for attn in self.attns:
            for proj in (attn.k_proj, attn.v_proj):
                out.append(proj(states).view(1, -1, s.heads, s.head_dim).transpose(1, 2))
        return tuple(out)


class DecoderStepGraph(nn.Module):
    """(new token ids, past self-attention K/V, cross K/V) → (logits of the new tokens, present K/V)."""

    def __init__(self, model: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.decoder = model.model.decoder
        self.head = head
        self.n_layers = shapes_of(model).layers

    def forward(self, input_ids: torch.Tensor, past: list[torch.Tensor], cross: list[torch.Tensor]):
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        for i in range(self.n_layers):
            cache.self_attention_cache.update(past[2 * i], past[2 * i + 1], i)
            cache.cross_attention_cache.update(cross[2 * i], cross[2 * i + 1], i)
            cache.is_updated[i] = True  # the attention layers then read K/V from the cache, never recompute
        # Cross attention runs only when encoder states are given; it reads them for their shape alone.
        states_shape_only = cross[0].transpose(1, 2).flatten(2)
        hidden = self.decoder(input_ids=input_ids, encoder_hidden_states=states_shape_only, cache=cache,
                              use_cache=True).last_hidden_state
        present = []
        for layer in cache.self_attention_cache.layers[: self.n_layers]:
            present += [layer.keys, layer.values]
        return (self.head(hidden), *present)


def swap_quantized_layers(model: nn.Module) -> int:
    """Replace every QuantLinear by its stand-in in place; return how many were swapped."""
    from edgeasr.quant.job import replace_module

    names = [n for n, m in model.named_modules() if isinstance(m, QuantLinear)]
    for name in names:
        replace_module(model, name, LinearStandIn(model.get_submodule(name)))
    return len(names)


def token_table(model: nn.Module) -> torch.Tensor:
    return model.model.decoder.embed_tokens.weight.detach().float()


def swap_head(model: nn.Module) -> HeadStandIn:
    """Give the decoder a marked embedding; return the marked head (the model's proj_out is left alone)."""
    table = token_table(model)
    model.model.decoder.embed_tokens = EmbeddingStandIn(table)
    return HeadStandIn(table)


@dataclass
class GraphSpec:
    """One graph to trace: the module, example inputs, dynamic axes and tensor names."""

    module: nn.Module
    args: tuple
    dynamic_shapes: tuple | None
    inputs: list[str]
    outputs: list[str]


QUERY_CHUNK = 500
"""Queries per attention slice where the length is fixed when tracing: Whisper's encoder scores (6 × 1500 × 1500
fp32, 54 MB per layer, twice with the softmax) are computed a third at a time, so ONNX Runtime never holds them
whole."""
HEAD_CHUNK = 2
"""Heads per attention slice where the length follows the audio (Moonshine's encoder: 8 × L² fp32 scores, 35 MB
for a 25 s segment, and the softmax, its NaN mask and the masked copy live beside them): a quarter at a time."""
CHUNKED_ATTENTION = "edgeasr_attention_slices"


def chunked_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, **kwargs) -> tuple[torch.Tensor, None]:
    """Encoder self-attention as SDPA in slices (the same numbers; a lower peak): of at most `QUERY_CHUNK`
    queries when the length is known when tracing, else of `HEAD_CHUNK` heads (a dynamic length cannot be
    cut into a fixed number of slices).

    The mask is dropped: an encoder here sees one unpadded utterance, so it attends everywhere. (Moonshine's
    export materialises that as an all-true L × L mask added to the scores, which also brings in a NaN guard
    after the softmax: two more score-sized tensors.)"""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    del attention_mask
    length, heads = query.shape[2], query.shape[1]
    if isinstance(length, int):
        bounds = [(s, min(s + QUERY_CHUNK, length)) for s in range(0, length, QUERY_CHUNK)]
        pieces = [sdpa_attention_forward(module, query[:, :, a:b], key, value, None, **kwargs)[0] for a, b in bounds]
        return torch.cat(pieces, dim=1), None
    if getattr(module, "num_key_value_groups", 1) != 1:  # grouped K/V: query heads do not pair with K/V heads
        return sdpa_attention_forward(module, query, key, value, None, **kwargs)
    pieces = [sdpa_attention_forward(module, query[:, h:h + HEAD_CHUNK], key[:, h:h + HEAD_CHUNK],
                                     value[:, h:h + HEAD_CHUNK], None, **kwargs)[0] for h in range(0, heads, HEAD_CHUNK)]
    return torch.cat(pieces, dim=2), None  # SDPA returns [batch, queries, heads, head_dim]


@torch.inference_mode()
def graph_specs(model: nn.Module, family: str) -> dict[str, GraphSpec]:
    """The encoder, cross-K/V and decoder-step graphs of `model` (stand-ins already swapped in)."""
    from transformers import AttentionInterface

    AttentionInterface.register(CHUNKED_ATTENTION, chunked_attention)
    # Only the encoder's self-attention: the decoder's masks are built for the model's own implementation.
    encoder_config = copy.copy(model.config)
    encoder_config._attn_implementation = CHUNKED_ATTENTION
    for layer in model.model.encoder.layers:
        layer.self_attn.config = encoder_config
    shapes = shapes_of(model)
    head = swap_head(model)
    if family == "whisper":
        features = torch.zeros(1, model.config.num_mel_bins, 3000)
        enc_dynamic = cross_dynamic = None
    else:
        # Moonshine's encoder length follows the audio; its strides need a multiple of 384 samples
        # in the example, and any length ≥ one conv window runs.
        features = torch.zeros(1, 384 * 125)
        enc_dynamic = ({1: torch.export.Dim.DYNAMIC},)
        cross_dynamic = ({1: torch.export.Dim.DYNAMIC},)
    encoder = EncoderGraph(model).eval()
    states = encoder(features)
    cross = CrossKVGraph(model).eval()
    kv_names = [f"{kind}_{i}" for i in range(shapes.layers) for kind in ("k", "v")]
    kv = list(cross(states))
    step = DecoderStepGraph(model, head).eval()
    past = [torch.zeros(1, shapes.heads, 3, shapes.head_dim) for _ in kv]
    cross_axes = [{2: torch.export.Dim.DYNAMIC} if cross_dynamic else {} for _ in kv]
    step_dynamic = ({1: torch.export.Dim.DYNAMIC}, [{2: torch.export.Dim.DYNAMIC}] * len(past), cross_axes)
    return {
        "encoder": GraphSpec(encoder, (features,), enc_dynamic, ["features"], ["encoder_states"]),
        "cross_kv": GraphSpec(cross, (states,), cross_dynamic, ["encoder_states"], [f"cross_{n}" for n in kv_names]),
        "decoder": GraphSpec(step, (torch.tensor([[1, 2]]), past, kv), step_dynamic,
                             ["input_ids", *[f"past_{n}" for n in kv_names], *[f"cross_{n}" for n in kv_names]],
                             ["logits", *[f"present_{n}" for n in kv_names]]),
    }


def trace_key(model: nn.Module) -> str:
    """What the traced graph structure depends on: model shape, stand-in layout, library versions.

    Not the weight values: those are refilled by name, so the slow trace runs once per model shape
    and recipe layout, not once per checkpoint.
    """
    import hashlib
    import json

    import transformers

    layout = [(name, m.layer.in_features, m.layer.out_features, m.layer.bias is not None,
               m.layer.sparse_val.numel() if m.sparse else 0, m.hadamard is not None,
               *(0 if t is None else t.numel() for t in (m.layer.in_scale, m.layer.in_shift, m.layer.outlier_idx)))
              for name, m in model.named_modules() if isinstance(m, LinearStandIn)]
    text = json.dumps([model.config.to_json_string(), layout, torch.__version__, transformers.__version__, VERSION])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


VERSION = 6
"""Bump when the traced modules change, so cached traces of the old shape are not reused; bundle.json records it
(`weights.graph_version`), so a benchmark can tell a cached bundle of older graphs (6: encoder attention in head
slices for Moonshine, without its all-true mask)."""


def traced_graph(spec: GraphSpec, name: str, key: str):
    """The graph of `spec` as ONNX with this model's weights: from the trace cache, else traced now."""
    import onnx
    from onnx import numpy_helper

    from edgeasr.paths import cache_dir

    path = cache_dir("traces") / key / f"{name}.onnx"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        partial = path.with_suffix(".partial")
        trace(spec, partial)
        partial.replace(path)  # an interrupted trace never looks finished
    model = onnx.load(path)
    state = {**dict(spec.module.named_parameters(remove_duplicate=False)),
             **dict(spec.module.named_buffers(remove_duplicate=False))}
    for init in model.graph.initializer:
        if init.name in state:
            value = state[init.name].detach().cpu().numpy()
            if tuple(init.dims) != value.shape:
                raise ValueError(f"cached trace {path} does not fit {init.name}: delete it and export again")
            init.CopyFrom(numpy_helper.from_array(value, init.name))
    return model


@torch.inference_mode()
def trace(spec: GraphSpec, path) -> None:
    """Trace one graph to an ONNX file (dynamo exporter: the TorchScript one fails on Moonshine)."""
    import logging

    # The exporter logs every decomposition at INFO; keep the export readable.
    logging.getLogger("torch.onnx").setLevel(logging.WARNING)
    program = torch.onnx.export(spec.module, spec.args, dynamo=True, dynamic_shapes=spec.dynamic_shapes,
                                input_names=spec.inputs, output_names=spec.outputs, opset_version=OPSET,
                                optimize=False, verbose=False)
    program.save(str(path), external_data=False)


OPSET = 18
