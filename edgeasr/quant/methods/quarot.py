"""QuaRot (Ashkboos et al., 2024): orthogonal Hadamard rotations that remove activation outliers.

Multiplying a linear's input by an orthogonal Hadamard-like matrix H and its weight by the same H
(y = (xH)(WH)ᵀ = xWᵀ) is exact in floating point, but spreads every outlier channel of x (and of W)
over all channels, so per-token activation grids and per-group weight grids lose far less at 4 bits.

How it is applied here. Whisper and Moonshine use LayerNorm, whose mean subtraction does not commute
with a rotation of the residual stream (the paper's RMSNorm models do); rather than the SliceGPT
mean-folding of every residual writer, embedding and conv front end, the rotation is applied inside each
block, right after the norm and on the inputs no previous op can rotate (o_proj/out_proj behind the
attention, fc2 behind GELU/SiLU): every linear stores W·H and rotates its input online
(`QuantLinear(hadamard=True)`, a fast Walsh–Hadamard transform of O(d log d) per token in deployment).
This is exact in FP and gives the same outlier suppression (with `fold_norms` the quantized weights and
activations are exactly those of a rotated residual stream), at the price of one online transform per linear.
Folding the norms' affine (γ, β) into the readers first — required for a rotated residual stream — is
optional here (`fold_norms`): on Moonshine it puts γ's channel outliers into the weights and measured
worse at W4, so it is off by default.

Weights on the rotated basis are then rounded (RTN) or GPTQ-compensated on rotated calibration inputs
(the shared Hessian core of `_hessian`); activations are quantized per token (dynamic) or with a
calibrated static scale, as the recipe says.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgeasr.errors import QuantizationError
from edgeasr.quant.arch import ArchGraph, BlockGraph
from edgeasr.quant.job import QuantJob, replace_module, to_quant_linear
from edgeasr.quant.layers import hadamard_matrix
from edgeasr.quant.methods import register


@dataclass(frozen=True)
class QuaRotOptions:
    """How the rotated weights are put on the grid."""

    weight_method: str = "rtn"
    """"rtn" (round the rotated weights) or "gptq" (Hessian error compensation on rotated inputs)."""
    fold_norms: bool = False
    """Fold each LayerNorm's weight/bias into the linears it feeds before rotating (the paper's first step)."""
    gptq_damp: float = 0.01
    """GPTQ only: dampening added to the Hessian diagonal, relative to its mean."""


@torch.no_grad()
def fold_norms(block: nn.Module, graph: BlockGraph) -> None:
    """Fold the affine (weight, bias) of every norm → linears edge into the linears; exact in FP."""
    for edge in graph.edges:
        if edge.kind != "norm":
            continue
        norm = block.get_submodule(edge.source)
        gamma = norm.weight.detach().float().clone() if norm.weight is not None else None
        beta = norm.bias.detach().float().clone() if getattr(norm, "bias", None) is not None else None
        for path in edge.targets:
            linear = block.get_submodule(path)
            w = linear.weight.detach().float()
            if beta is not None:
                shift = w @ beta
                if linear.bias is None:
                    linear.bias = nn.Parameter(shift.to(linear.weight.dtype))
                else:
                    linear.bias.add_(shift.to(linear.bias.dtype))
            if gamma is not None:
                linear.weight.copy_((w * gamma[None, :]).to(linear.weight.dtype))
        if norm.weight is not None:
            norm.weight.fill_(1.0)
        if getattr(norm, "bias", None) is not None:
            norm.bias.zero_()


def rotated_weight(linear: nn.Linear) -> torch.Tensor:
    """W·H: the weight that, applied to the online-rotated input xH, gives the original xWᵀ."""
    w = linear.weight.detach().float()
    return w @ hadamard_matrix(w.shape[1]).to(w)


class RotatedLinear(nn.Module):
    """An FP linear on the rotated basis (input rotated online): the unquantized QuaRot layer, for checks."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.register_buffer("weight", rotated_weight(linear))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())
        self.register_buffer("rotation", hadamard_matrix(linear.in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x @ self.rotation.to(x), self.weight.to(x), self.bias)


def rotate_fp(model: nn.Module, arch: ArchGraph, parts=("encoder", "decoder"), fold: bool = False) -> None:
    """Apply QuaRot's transform without quantizing (norms folded, every block linear rotated); exact in FP."""
    for part in parts:
        graph = arch.block_graph(part)
        for block in arch.blocks(model, part):
            if fold:
                fold_norms(block, graph)
            for path in graph.linears:
                replace_module(block, path, RotatedLinear(block.get_submodule(path)))


@register("quarot", QuaRotOptions, calibrated=False,
          summary="Hadamard rotation of every linear's input and weights (exact in FP) for W4A4/W4A8")
def quarot(job: QuantJob, options: QuaRotOptions) -> None:
    if options.weight_method not in ("rtn", "gptq"):
        raise QuantizationError(f"quarot weight_method must be 'rtn' or 'gptq', got {options.weight_method!r}")
    if not job.w_spec.enabled:
        raise QuantizationError("quarot needs weight bits 2-8 (the rotated weights are stored as codes); "
                                "supported: W2-8 with A4/A6/A8/A16")

    def quantize_block(block: nn.Module, graph: BlockGraph, inputs=None) -> None:
        if options.fold_norms:
            fold_norms(block, graph)
        weights = {p: rotated_weight(block.get_submodule(p)) for p in graph.linears}
        if options.weight_method == "gptq":
            weights = _gptq_weights(block, graph, weights, inputs, job, options)
            for path, (w, scale, zero) in weights.items():
                layer = to_quant_linear(block.get_submodule(path), job.w_spec, job.a_spec, weight=w,
                                        scale=scale, zero=zero, hadamard=True)
                replace_module(block, path, layer)
            return
        for path, w in weights.items():
            replace_module(block, path, to_quant_linear(block.get_submodule(path), job.w_spec, job.a_spec,
                                                        weight=w, hadamard=True))

    if options.weight_method == "gptq" or (job.a_spec.enabled and not job.a_spec.dynamic):
        job.walk(lambda ctx: quantize_block(ctx.block, ctx.graph, ctx))
        return
    for _part, block, graph in job.blocks():
        quantize_block(block, graph)


def _gptq_weights(block, graph, weights, ctx, job, options):
    """GPTQ on the rotated basis through the shared Hessian core, on inputs rotated as the layer will see them."""
    from edgeasr.quant.calibrate import hook_linear_inputs
    from edgeasr.quant.methods._hessian import InputStats, gptq_quantize

    stats = {p: InputStats.empty(block.get_submodule(p).in_features) for p in graph.linears}
    rotations = {p: hadamard_matrix(block.get_submodule(p).in_features) for p in graph.linears}
    with hook_linear_inputs(block, list(graph.linears), lambda path, x: stats[path].add(x @ rotations[path])):
        ctx.run()
    out = {}
    for path, w in weights.items():
        result = gptq_quantize(w, stats[path].hessian, job.w_spec, damp=options.gptq_damp)
        out[path] = (result.weight, result.scale, result.zero)
    return out
