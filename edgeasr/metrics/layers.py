"""A neutral description of a model's layers for the cost model: what a torch model or a bundle reports.

`LayerInfo` carries only what the cost walk needs (shapes, bit-widths, stored bytes), so an exported
bundle can write the same records into its metadata and get the same readouts without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

LayerKind = Literal["linear", "conv1d", "embedding", "param"]
FP_BITS = 16
"""Width an unquantized weight or activation counts as (the FP16 deployment convention of the cost model)."""
FP_BYTES = FP_BITS // 8


@dataclass(frozen=True)
class LayerInfo:
    """One weight-carrying layer, in execution order within its part."""

    name: str
    """transformers module path (e.g. model.decoder.layers.0.encoder_attn.k_proj); places the layer."""
    kind: LayerKind
    """linear, conv1d, embedding, or param (the leftover parameters of a part, e.g. norms: size only)."""
    in_features: int
    """Linear/conv input width (channels); for an embedding, the number of rows."""
    out_features: int
    """Output width (channels); for an embedding, the row width."""
    w_bits: int = 16
    """Weight bits (16 = unquantized)."""
    a_bits: int = 16
    """Bits of the input activation as the matmul reads it (16 = unquantized)."""
    weight_bytes: int = 0
    """Stored bytes of the weights incl. bias, scales, zero points, outliers and sparse corrections."""
    params: int = 0
    """Number of weight and bias elements (before quantization)."""
    kernel: int = 1
    """Conv kernel size."""
    stride: int = 1
    """Conv stride."""
    padding: int = 0
    """Conv padding on each side."""
    groups: int = 1
    """Conv groups."""
    fp_in_features: int = 0
    """Input channels kept in FP and multiplied densely (QUIK outliers)."""
    sparse_nnz: int = 0
    """FP weights added on top of the grid (SpQR): extra FP MACs per input row."""
    hadamard: bool = False
    """An online Hadamard rotation of the input (in × in FP MACs per row)."""
    tied_to: str | None = None
    """Name of the layer whose weight this one shares (counted once in size)."""

    @property
    def part(self) -> str:
        return "encoder" if ".encoder." in f".{self.name}" else "decoder"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ModelDims:
    """Model facts the walk needs beyond the layer list."""

    family: str
    """whisper or moonshine."""
    encoder_heads: int
    """Attention heads of the encoder (the score matrices are heads × queries × keys)."""
    decoder_heads: int
    """Attention heads of the decoder."""
    input_rate: float
    """Encoder input frames per second of audio (Whisper: 100 mel frames; Moonshine: 16000 samples)."""
    window_seconds: float | None
    """Fixed window every encoder pass sees (Whisper: 30 s), or None when it follows the audio."""

    def to_dict(self) -> dict:
        return asdict(self)


def model_dims(model) -> ModelDims:
    """The `ModelDims` of a transformers Whisper or Moonshine model."""
    config = model.config
    if config.model_type == "whisper":
        # 3000 mel frames (100 per second) padded to the fixed window, which conv2 halves to max_source_positions.
        window = config.max_source_positions * 2 / 100
        return ModelDims("whisper", config.encoder_attention_heads, config.decoder_attention_heads, 100.0, window)
    if config.model_type == "moonshine":
        return ModelDims("moonshine", config.encoder_num_attention_heads, config.decoder_num_attention_heads,
                         16000.0, None)
    raise ValueError(f"no cost model for model type {config.model_type!r}")


def _fp_bytes(module) -> tuple[int, int]:
    params = sum(p.numel() for p in module.parameters(recurse=False))
    return params, params * FP_BYTES


def describe_layers(model) -> list[LayerInfo]:
    """LayerInfo records for every linear, conv, embedding (and the leftover parameters) of a torch model."""
    from torch import nn

    from edgeasr.quant.layers import QuantLinear

    infos: list[LayerInfo] = []
    owners: dict[int, str] = {}
    counted: set[int] = set()
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        tied_to = None
        if isinstance(weight, nn.Parameter):
            tied_to = owners.setdefault(weight.data_ptr(), name)
            tied_to = None if tied_to == name else tied_to
        if isinstance(module, QuantLinear):
            params = module.codes.numel() + (0 if module.bias is None else module.bias.numel())
            infos.append(LayerInfo(
                name, "linear", module.in_features, module.out_features, module.w_spec.bits, module.a_spec.bits,
                module.weight_bytes(), params,
                fp_in_features=0 if module.outlier_idx is None else module.outlier_idx.numel(),
                sparse_nnz=0 if module.sparse_val is None else module.sparse_val.numel(), hadamard=module.hadamard))
        elif isinstance(module, nn.Linear):
            params, stored = _fp_bytes(module)
            infos.append(LayerInfo(name, "linear", module.in_features, module.out_features, weight_bytes=stored,
                                   params=params, tied_to=tied_to))
        elif isinstance(module, nn.Conv1d):
            params, stored = _fp_bytes(module)
            infos.append(LayerInfo(name, "conv1d", module.in_channels, module.out_channels, weight_bytes=stored,
                                   params=params, kernel=module.kernel_size[0], stride=module.stride[0],
                                   padding=module.padding[0] if isinstance(module.padding, tuple) else 0,
                                   groups=module.groups))
        elif isinstance(module, nn.Embedding):
            params, stored = _fp_bytes(module)
            infos.append(LayerInfo(name, "embedding", module.num_embeddings, module.embedding_dim,
                                   weight_bytes=stored, params=params, tied_to=tied_to))
        else:
            continue
        counted.update(id(t) for t in module.parameters(recurse=False))
        counted.update(id(t) for t in module.buffers(recurse=False))
    infos += _leftover(model, counted)
    return infos


def _leftover(model, counted: set[int]) -> list[LayerInfo]:
    """One `param` record per part for the parameters no layer above owns (norms, Whisper's decoder ...)."""
    totals = {"encoder": 0, "decoder": 0}
    for name, tensor in model.named_parameters():
        if id(tensor) not in counted:
            totals["encoder" if ".encoder." in f".{name}" else "decoder"] += tensor.numel()
    return [LayerInfo(f"model.{part}.other", "param", 0, 0, weight_bytes=n * FP_BYTES, params=n)
            for part, n in totals.items() if n]
