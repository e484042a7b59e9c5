"""A neutral description of a model's layers for the cost model: what a torch model or a bundle reports.

`LayerInfo` carries only what the cost walk needs (shapes, bit-widths, stored bytes), so an exported
bundle can write the same records into its metadata and get the same readouts without torch. Plain data
only: the bundle runtime reads these records, so this module imports neither torch nor `quant`; a torch
model's records come from `edgeasr.backends.layers`.
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
    """An online Hadamard rotation of the input (a butterfly: see `cost.rotation_ops`)."""
    tied_to: str | None = None
    """Name of the layer whose weight this one shares (counted once in size)."""
    quant_bits: int = 0
    """A quantized layer's effective bits in total (`metrics.bits`: codes, scales, zeros, outliers, extras)."""

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
