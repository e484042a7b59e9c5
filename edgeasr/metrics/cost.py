"""Cost readouts: MACs, BOPs, memory I/O and model size, from the layers of the model that actually runs.

Conventions (stated in docs/study.md too):
  * MACs count matmuls and convolutions only: linears, conv front ends, and the attention score (Q·Kᵀ)
    and value (P·V) products, which are activation × activation. Norms, softmax and GELU are left out.
  * BOPs = Σ MACs × b_w × b_a, where an unquantized operand counts as 16 bits (the FP16 deployment
    baseline; the CPU research backend computes in fp32, which is an implementation detail).
  * Memory I/O = weight bytes at their stored width (codes, scales, zero points, outliers, sparse
    corrections; FP tensors at 16 bits) read once per encoder pass and once per decoded token, plus the
    activations each op reads (at its input's bit-width) and writes (16 bits), KV caches included.
  * Shapes: Whisper's encoder always sees a 30 s window (1500 positions); Moonshine's encoder length
    follows its conv front end exactly. The decoder runs `n_tokens` positions with a KV cache: its
    weights are read per token, cross-attention K/V are projected once per utterance, and self-attention
    at position p reads p + 1 cached keys and values.
  * Size: `effective_bits` = bits per weight over the quantized layers, everything the method keeps
    (codes at the grid width, scales, zero points, outliers, second-level statistics; `metrics.bits`);
    `total_bytes` = every file of the bundle, or for a torch model what its bundle would hold with the
    default export options (by part in `ModelSize.total_parts`).

The walk is over `LayerInfo` records, a neutral description that every backend gives (`layer_infos()`):
the torch backend from its modules (`edgeasr.backends.layers`), a bundle from its metadata.
Layer names follow the transformers module names, which is how the walk knows where each layer sits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from edgeasr.metrics.bits import (DEFAULT_HEAD_BITS, DEFAULT_HEAD_BLOCK, FP32_BYTES, FRONT_END_BITS,
                                  bundle_layer_bytes, head_layout, row_int8_bytes)
from edgeasr.metrics.layers import FP_BITS, LayerInfo, ModelDims

__all__ = ["CostReport", "LayerInfo", "ModelDims", "ModelSize", "PartCost", "estimate_cost",
           "estimate_cost_from_layers", "model_size"]


@dataclass
class PartCost:
    """Totals of one slice of the model (a part such as the encoder, or a kind of op)."""

    macs: int = 0
    """Multiply-accumulates."""
    bops: int = 0
    """MACs weighted by the operand bit-widths."""
    weight_read_bytes: int = 0
    """Weight bytes fetched (per encoder pass / per decoder token, summed)."""
    activation_bytes: int = 0
    """Activation bytes read and written, KV caches included."""

    def add(self, macs: float, w_bits: int, a_bits: int, weight_read: float, activation: float) -> None:
        self.macs += round(macs)
        self.bops += round(macs * w_bits * a_bits)
        self.weight_read_bytes += round(weight_read)
        self.activation_bytes += round(activation)

    @property
    def memory_io_bytes(self) -> int:
        return self.weight_read_bytes + self.activation_bytes


@dataclass
class ModelSize:
    """Weight bytes of a model, FP references against what is stored."""

    params: int
    """Parameters of the matmul, conv and embedding layers plus the small rest (norms)."""
    weight_bytes: int
    """Resident bytes as stored (quantized layers packed; FP tensors at 16 bits); tied weights once."""
    fp16_weight_bytes: int
    """The same model with every weight in fp16."""
    fp32_weight_bytes: int
    """The same model with every weight in fp32 (how the research backend holds an FP model)."""
    on_disk_bytes: int | None = None
    """Bytes of the weight files (safetensors) when the model came from a local directory."""
    effective_bits: float | None = None
    """Bits per weight over the quantized layers (`metrics.bits`); None for an FP model."""
    total_bytes: int | None = None
    """Everything the bundle holds (every file); for a torch model, what its bundle would hold."""
    total_parts: dict[str, int] | None = None
    """`total_bytes` by part (quantized linears, head, front end, positions, other FP, files)."""

    @property
    def ratio_vs_fp32(self) -> float:
        return self.fp32_weight_bytes / self.weight_bytes

    @property
    def ratio_vs_fp16(self) -> float:
        return self.fp16_weight_bytes / self.weight_bytes

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio_vs_fp32": round(self.ratio_vs_fp32, 3),
                "ratio_vs_fp16": round(self.ratio_vs_fp16, 3)}


@dataclass
class CostReport:
    """What one utterance costs the model as it runs."""

    audio_seconds: float
    n_tokens: int
    """Decoder positions run (prompt and generated tokens)."""
    encoder_positions: int
    """Encoder output length per window."""
    encoder_windows: int
    """Encoder passes (Whisper: one per 30 s window)."""
    encoder: PartCost
    decoder: PartCost
    by_kind: dict[str, PartCost]
    """Totals per op kind: linear, conv1d, embedding, attention."""
    size: ModelSize

    @property
    def macs(self) -> int:
        return self.encoder.macs + self.decoder.macs

    @property
    def bops(self) -> int:
        return self.encoder.bops + self.decoder.bops

    @property
    def weight_read_bytes(self) -> int:
        return self.encoder.weight_read_bytes + self.decoder.weight_read_bytes

    @property
    def activation_bytes(self) -> int:
        return self.encoder.activation_bytes + self.decoder.activation_bytes

    @property
    def memory_io_bytes(self) -> int:
        return self.weight_read_bytes + self.activation_bytes

    @property
    def weight_bytes(self) -> int:
        return self.size.weight_bytes

    @property
    def fp32_weight_bytes(self) -> int:
        return self.size.fp32_weight_bytes

    @property
    def size_ratio(self) -> float:
        """FP32 bytes over stored bytes."""
        return self.size.ratio_vs_fp32

    @property
    def effective_bits(self) -> float | None:
        """Bits per weight over the quantized layers, everything the method keeps included."""
        return self.size.effective_bits

    @property
    def total_bytes(self) -> int | None:
        """Everything the bundle holds (or would hold, for a torch model)."""
        return self.size.total_bytes

    def to_dict(self) -> dict:
        part = lambda p: {**asdict(p), "memory_io_bytes": p.memory_io_bytes}
        return {"audio_seconds": self.audio_seconds, "n_tokens": self.n_tokens,
                "encoder_positions": self.encoder_positions, "encoder_windows": self.encoder_windows,
                "macs": self.macs, "bops": self.bops, "memory_io_bytes": self.memory_io_bytes,
                "weight_read_bytes": self.weight_read_bytes, "activation_bytes": self.activation_bytes,
                "weight_bytes": self.weight_bytes, "fp32_weight_bytes": self.fp32_weight_bytes,
                "size_ratio": round(self.size_ratio, 3), "effective_bits": self.effective_bits,
                "total_bytes": self.total_bytes, "encoder": part(self.encoder),
                "decoder": part(self.decoder), "by_kind": {k: part(v) for k, v in self.by_kind.items()},
                "size": self.size.to_dict()}

    def __str__(self) -> str:
        return (f"{self.macs / 1e9:.2f} GMAC, {self.bops / 1e12:.2f} TBOP, memory I/O {self.memory_io_bytes / 1e6:.1f} MB "
                f"(weights {self.weight_read_bytes / 1e6:.1f} MB), size {self.weight_bytes / 1e6:.1f} MB "
                f"({self.size_ratio:.1f}x smaller than fp32), total {self.total_bytes / 1e6:.1f} MB"
                + ("" if self.effective_bits is None else f", {self.effective_bits:.2f} effective bits per weight"))


# ---- the walk ------------------------------------------------------------------------------------
def _conv_length(length: int, layer: LayerInfo) -> int:
    return (length + 2 * layer.padding - layer.kernel) // layer.stride + 1


def encoder_positions(layers: list[LayerInfo], dims: ModelDims, audio_seconds: float) -> int:
    """Encoder sequence length after the conv front end, for one window of audio."""
    seconds = dims.window_seconds or audio_seconds
    length = round(seconds * dims.input_rate)
    for layer in layers:
        if layer.kind == "conv1d" and layer.part == "encoder":
            length = _conv_length(length, layer)
    if length < 1:
        raise ValueError(f"{audio_seconds} s of audio is too short for the encoder's conv front end")
    return length


def _act_bytes(elements: float, bits: int) -> float:
    return elements * bits / 8


def rotation_ops(width: int) -> int:
    """Per-row work of QuaRot's online rotation as `edgeasr.quant.hadamard` runs it: width = m·2ᵏ with m = 1
    or 4·(odd part); k butterfly adds per element plus, when m > 1, an m × m block (m MACs per element).
    Each add is counted as one FP16 MAC (an upper bound); a dense product would be width² MACs."""
    odd = width // (width & -width)
    m = 1 if odd == 1 else 4 * odd
    return width * (int(math.log2(width // m)) + (m if m > 1 else 0))


def _matmul_layer(cost: PartCost, kind_cost: PartCost, layer: LayerInfo, rows: float, weight_reads: float) -> None:
    """A linear applied to `rows` input rows, its weights fetched `weight_reads` times."""
    quant_in = layer.in_features - layer.fp_in_features
    # Per row: the grid matmul, the FP outlier columns, the sparse FP corrections, an online rotation.
    fp_macs = layer.out_features * layer.fp_in_features + layer.sparse_nnz
    fp_macs += rotation_ops(layer.in_features) if layer.hadamard else 0
    activation = _act_bytes(rows * layer.in_features, layer.a_bits) + _act_bytes(rows * layer.out_features, FP_BITS)
    for target in (cost, kind_cost):
        target.add(rows * layer.out_features * quant_in, layer.w_bits, layer.a_bits, weight_reads * layer.weight_bytes,
                   activation)
        target.add(rows * fp_macs, FP_BITS, FP_BITS, 0, 0)


def _attention(cost: PartCost, kind_cost: PartCost, width: int, heads: int, queries: float, keys: float,
               repeat: float) -> None:
    """`repeat` × (Q·Kᵀ and P·V of `queries` rows over `keys` rows), activation × activation, all 16-bit."""
    macs = 2 * queries * keys * width
    scores = queries * keys * heads
    # Read Q, K and V; write the scores and read them back; write the output.
    activation = _act_bytes(queries * width * 2 + keys * width * 2 + scores * 2, FP_BITS)
    for target in (cost, kind_cost):
        target.add(repeat * macs, FP_BITS, FP_BITS, 0, repeat * activation)


def _is_cross_kv(name: str) -> bool:
    return "encoder_attn." in name and (name.endswith("k_proj") or name.endswith("v_proj"))


def estimate_cost_from_layers(layers: list[LayerInfo], dims: ModelDims, audio_seconds: float,
                              n_tokens: int, size: ModelSize | None = None) -> CostReport:
    """Cost of one utterance of `audio_seconds` decoded into `n_tokens` positions, from a layer list."""
    windows = max(1, math.ceil(audio_seconds / dims.window_seconds)) if dims.window_seconds else 1
    t_enc = encoder_positions(layers, dims, audio_seconds)
    # Decoder self-attention at position p reads p + 1 cached keys: (n + 1) / 2 on average over n steps.
    mean_self_keys = (n_tokens + 1) / 2
    parts = {"encoder": PartCost(), "decoder": PartCost()}
    kinds: dict[str, PartCost] = {}
    length = round((dims.window_seconds or audio_seconds) * dims.input_rate)
    for layer in layers:
        if layer.kind == "param":
            continue
        cost, kind_cost = parts[layer.part], kinds.setdefault(layer.kind, PartCost())
        if layer.kind == "conv1d":
            out_len = _conv_length(length, layer)
            macs = out_len * layer.out_features * layer.in_features // layer.groups * layer.kernel
            activation = (_act_bytes(length * layer.in_features, layer.a_bits)
                          + _act_bytes(out_len * layer.out_features, FP_BITS))
            for target in (cost, kind_cost):
                target.add(windows * macs, layer.w_bits, layer.a_bits, windows * layer.weight_bytes, windows * activation)
            length = out_len
        elif layer.kind == "embedding":
            # A lookup reads and writes one row per position: no MACs, and only the rows it touches.
            rows = windows * t_enc if layer.part == "encoder" else n_tokens
            row_bytes = layer.weight_bytes / layer.in_features
            for target in (cost, kind_cost):
                target.add(0, layer.w_bits, FP_BITS, rows * row_bytes, _act_bytes(rows * layer.out_features, FP_BITS))
        elif layer.part == "encoder" or _is_cross_kv(layer.name):
            _matmul_layer(cost, kind_cost, layer, windows * t_enc, windows)
        else:
            _matmul_layer(cost, kind_cost, layer, n_tokens, n_tokens)
        if layer.kind == "linear" and layer.name.endswith("q_proj"):
            attn = kinds.setdefault("attention", PartCost())
            if layer.part == "encoder":
                _attention(cost, attn, layer.out_features, dims.encoder_heads, t_enc, t_enc, windows)
            elif "encoder_attn." in layer.name:  # every step reads the cached cross-attention K/V again
                _attention(cost, attn, layer.out_features, dims.decoder_heads, 1, t_enc, n_tokens)
            else:
                _attention(cost, attn, layer.out_features, dims.decoder_heads, 1, mean_self_keys, n_tokens)
    return CostReport(audio_seconds, n_tokens, t_enc, windows, parts["encoder"], parts["decoder"], kinds,
                      size or size_from_layers(layers))


# ---- size ----------------------------------------------------------------------------------------
def size_from_layers(layers: list[LayerInfo], on_disk_bytes: int | None = None,
                     bundle_files: dict[str, int] | None = None) -> ModelSize:
    """Resident bytes of the described layers; a weight tied to another layer's is counted once.

    `bundle_files` (name → bytes) gives the total of a real bundle; without it the total is what a bundle
    of these layers would hold with the default export options (`bundle_parts`).
    """
    own = [layer for layer in layers if layer.tied_to is None]
    params = sum(layer.params for layer in own)
    parts = bundle_parts(layers) if bundle_files is None else {"files": sum(bundle_files.values())}
    return ModelSize(params, sum(layer.weight_bytes for layer in own), 2 * params, 4 * params, on_disk_bytes,
                     model_effective_bits(layers), sum(parts.values()), parts)


def model_effective_bits(layers: list[LayerInfo]) -> float | None:
    """Σ effective bits / Σ weights over the quantized layers (those with `quant_bits`)."""
    quantized = [l for l in layers if l.quant_bits]
    weights = sum(l.in_features * l.out_features for l in quantized)
    return round(sum(l.quant_bits for l in quantized) / weights, 4) if weights else None


def bundle_parts(layers: list[LayerInfo], head_bits: int | None = DEFAULT_HEAD_BITS,
                 front_end_bits: int | None = FRONT_END_BITS, head_block: int = DEFAULT_HEAD_BLOCK) -> dict[str, int]:
    """Bytes a bundle of these layers would hold, by part, with the default export options: packed
    quantized linears, the tied head (packed at `head_bits`, blocks of `head_block`), conv front end and position tables (int8
    rows), and every other weight in fp32. An FP model (no quantized layer) is exported all fp32.
    Not counted: tokenizer, mel filters and metadata files (see `edgeasr.export` for a real bundle)."""
    quantized = any(l.quant_bits for l in layers)
    parts = dict.fromkeys(("quantized_linears", "head", "front_end", "positions", "fp32_other"), 0)
    for l in layers:
        if l.tied_to is not None:
            continue
        front_end = quantized and bool(front_end_bits) and front_end_bits < 16
        if l.quant_bits:
            parts["quantized_linears"] += l.weight_bytes
        elif l.kind == "embedding" and l.name.endswith("embed_tokens"):
            parts["head"] += (bundle_layer_bytes(head_layout(l.in_features, l.out_features, head_bits, head_block))
                              if quantized and head_bits and head_bits < 16 else FP32_BYTES * l.params)
        elif l.kind == "embedding" and front_end:  # position tables
            parts["positions"] += row_int8_bytes(l.in_features, l.params)
        elif l.kind == "conv1d" and front_end:
            weights = l.in_features // l.groups * l.out_features * l.kernel
            parts["front_end"] += row_int8_bytes(l.out_features, weights) + FP32_BYTES * (l.params - weights)
        else:
            parts["fp32_other"] += FP32_BYTES * l.params
    return parts


def _weights_on_disk(source: str | Path) -> int | None:
    path = Path(source)
    files = list(path.glob("*.safetensors")) if path.is_dir() else [path] if path.suffix == ".safetensors" else []
    return sum(f.stat().st_size for f in files) or None


def _resolve(engine_or_backend) -> tuple[list[LayerInfo], ModelDims, str]:
    """Layers, dims and weight-file location of an Engine or a backend (`edgeasr.engine.Backend`)."""
    backend = getattr(engine_or_backend, "backend", engine_or_backend)
    return backend.layer_infos(), backend.model_dims(), backend.source


def _bundle_files(source: str | Path) -> dict[str, int] | None:
    """Every file of a bundle directory (None when `source` is not one)."""
    path = Path(source)
    if not (path / "bundle.json").is_file():
        return None
    return {p.name: p.stat().st_size for p in sorted(path.iterdir()) if p.is_file()}


def _size(layers: list[LayerInfo], source: str | Path) -> ModelSize:
    return size_from_layers(layers, _weights_on_disk(source), _bundle_files(source))


def model_size(engine_or_backend) -> ModelSize:
    """Resident weight bytes, FP16/FP32 references, effective bits and total (bundle) bytes."""
    layers, _dims, source = _resolve(engine_or_backend)
    return _size(layers, source)


def estimate_cost(engine_or_backend, audio_seconds: float, n_tokens: int) -> CostReport:
    """Cost of one utterance for an Engine or a backend (torch or bundle)."""
    layers, dims, source = _resolve(engine_or_backend)
    return estimate_cost_from_layers(layers, dims, audio_seconds, n_tokens, _size(layers, source))
