"""Which op feeds which linear, per architecture, written once for every method that needs it.

Scale-folding methods (SmoothQuant, AWQ, OS+) move a per-channel factor from a linear's input into the
op that produces that input: a LayerNorm (weight and bias), another linear (output rows), or the value
half of Moonshine's gated MLP. Rotation methods (QuaRot) need the norms that read the residual stream and
the linears that write it. Paths are relative to one transformer block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

FoldKind = Literal["norm", "linear", "gated_value"]


@dataclass(frozen=True)
class FoldEdge:
    """`source` produces the input of every linear in `targets` (a per-channel scale can move across)."""

    source: str
    targets: tuple[str, ...]
    kind: FoldKind


@dataclass(frozen=True)
class BlockGraph:
    linears: tuple[str, ...]
    """Every linear of the block in execution order."""
    edges: tuple[FoldEdge, ...]
    unfoldable: tuple[str, ...] = ()
    """Linears whose input comes through a nonlinearity: a scale must stay on the layer's own input."""
    residual_writers: tuple[str, ...] = ()
    """Linears whose output is added to the residual stream (rotated on their output side by QuaRot)."""
    external_inputs: tuple[str, ...] = ()
    """Linears reading a tensor from outside the block (cross-attention K/V read the encoder output)."""


@dataclass(frozen=True)
class ArchGraph:
    family: str
    encoder_blocks: str
    decoder_blocks: str
    encoder: BlockGraph
    decoder: BlockGraph
    encoder_final_norm: str
    decoder_final_norm: str
    norm_has_bias: bool

    def blocks(self, model: nn.Module, part: str) -> nn.ModuleList:
        return model.get_submodule(self.encoder_blocks if part == "encoder" else self.decoder_blocks)

    def block_graph(self, part: str) -> BlockGraph:
        return self.encoder if part == "encoder" else self.decoder


def _attn(prefix: str, out: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.{p}" for p in ("q_proj", "k_proj", "v_proj", out))


_WHISPER_ENC = BlockGraph(
    linears=_attn("self_attn", "out_proj") + ("fc1", "fc2"),
    edges=(FoldEdge("self_attn_layer_norm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "norm"),
           FoldEdge("self_attn.v_proj", ("self_attn.out_proj",), "linear"),
           FoldEdge("final_layer_norm", ("fc1",), "norm")),
    unfoldable=("fc2",),
    residual_writers=("self_attn.out_proj", "fc2"),
)
_WHISPER_DEC = BlockGraph(
    linears=_attn("self_attn", "out_proj") + _attn("encoder_attn", "out_proj") + ("fc1", "fc2"),
    edges=_WHISPER_ENC.edges[:2] + (
        FoldEdge("encoder_attn_layer_norm", ("encoder_attn.q_proj",), "norm"),
        FoldEdge("encoder_attn.v_proj", ("encoder_attn.out_proj",), "linear"),
        FoldEdge("final_layer_norm", ("fc1",), "norm")),
    unfoldable=("fc2",),
    residual_writers=("self_attn.out_proj", "encoder_attn.out_proj", "fc2"),
    external_inputs=("encoder_attn.k_proj", "encoder_attn.v_proj"),
)
_MOONSHINE_ENC = BlockGraph(
    linears=_attn("self_attn", "o_proj") + ("mlp.fc1", "mlp.fc2"),
    edges=(FoldEdge("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "norm"),
           FoldEdge("self_attn.v_proj", ("self_attn.o_proj",), "linear"),
           FoldEdge("post_attention_layernorm", ("mlp.fc1",), "norm")),
    unfoldable=("mlp.fc2",),
    residual_writers=("self_attn.o_proj", "mlp.fc2"),
)
_MOONSHINE_DEC = BlockGraph(
    linears=_attn("self_attn", "o_proj") + _attn("encoder_attn", "o_proj") + ("mlp.fc1", "mlp.fc2"),
    edges=_MOONSHINE_ENC.edges[:2] + (
        FoldEdge("post_attention_layernorm", ("encoder_attn.q_proj",), "norm"),
        FoldEdge("encoder_attn.v_proj", ("encoder_attn.o_proj",), "linear"),
        FoldEdge("final_layernorm", ("mlp.fc1",), "norm"),
        FoldEdge("mlp.fc1", ("mlp.fc2",), "gated_value")),
    residual_writers=("self_attn.o_proj", "encoder_attn.o_proj", "mlp.fc2"),
    external_inputs=("encoder_attn.k_proj", "encoder_attn.v_proj"),
)

GRAPHS = {
    "whisper": ArchGraph("whisper", "model.encoder.layers", "model.decoder.layers", _WHISPER_ENC, _WHISPER_DEC,
                         "model.encoder.layer_norm", "model.decoder.layer_norm", norm_has_bias=True),
    "moonshine": ArchGraph("moonshine", "model.encoder.layers", "model.decoder.layers", _MOONSHINE_ENC,
                           _MOONSHINE_DEC, "model.encoder.layer_norm", "model.decoder.norm", norm_has_bias=False),
}


def graph_for(model: nn.Module) -> ArchGraph:
    return GRAPHS[model.config.model_type]
