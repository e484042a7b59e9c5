"""QuaRot (Ashkboos et al., 2024): orthogonal Hadamard rotations that remove activation outliers.

Multiplying a linear's input by an orthogonal Hadamard-like matrix H and its weight by the same H
(y = (xH)(WH)ᵀ = xWᵀ) is exact in floating point, but spreads every outlier channel of x (and of W)
over all channels, so per-token activation grids and per-group weight grids lose far less at 4 bits.

How it is applied here. Whisper and Moonshine use LayerNorm, whose mean subtraction does not commute
with a rotation of the residual stream (the paper's RMSNorm models do); rather than the SliceGPT
mean-folding of every residual writer, embedding and conv front end, the rotation is applied inside each
block, right after the norm and on the inputs no previous op can rotate (o_proj/out_proj behind the
attention, fc2 behind GELU/SiLU): every linear stores W·Q and rotates its input online by Q = D·H, the
paper's randomized Hadamard: D a seeded ±1 diagonal per layer (kept as the layer's ±1 `in_scale`, so the
checkpoint and the bundle carry it) and H a true Hadamard matrix, (H_m ⊗ H_2ᵏ)/√d with a Paley block H_m
for widths that are not powers of two (`edgeasr.quant.hadamard`: 384 = 12·32, 288 = 36·8, 416 = 52·8), run
as a fast Walsh–Hadamard butterfly, O(d log d) adds per token, in torch and in the exported graph
(`QuantLinear(hadamard=True)`). The fused weights are computed in fp64.
This is exact in FP and gives the same outlier suppression (with `fold_norms` the quantized weights and
activations are exactly those of a rotated residual stream), at the price of one online transform per linear.
Folding the norms' affine (γ, β) into the readers first — required for a rotated residual stream — is
optional here (`fold_norms`): on Moonshine it puts γ's channel outliers into the weights and measured
worse (moonshine-tiny W4A16 2.03 → 4.81 % WER, W3A16 41.6 → 108.7 %), so it is off by default. For the same
reason the paper's fused residual-stream rotation (`residual`, which needs the fold) is an experiment, not
the default: W4A16 5.55 %, W3A16 119 % (docs/quarot.md).

Weights on the rotated basis are then rounded (RTN) or GPTQ-compensated through the shared walk of
`_hessian` (the Hessian of the rotated inputs is Qᵀ·G·Q, G that of the inputs as they arrive); activations
are quantized per token (dynamic) or with a calibrated static scale, as the recipe says.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from edgeasr.errors import QuantizationError
from edgeasr.quant.arch import ArchGraph, BlockGraph
from edgeasr.quant.job import QuantJob, replace_module, to_quant_linear
from edgeasr.quant.layers import QuantLinear
from edgeasr.quant.spec import QuantSpec
from edgeasr.quant.hadamard import hadamard_transform, rotate_hessian
from edgeasr.quant.methods import register
from edgeasr.quant.methods._hessian import GPTQHooks, gptq_quantize, walk_linears


@dataclass(frozen=True)
class QuaRotOptions:
    """How the rotated weights are put on the grid."""

    weight_method: str = "rtn"
    """"rtn" (round the rotated weights) or "gptq" (Hessian error compensation on rotated inputs)."""
    fold_norms: bool = False
    """Fold each LayerNorm's weight/bias into the linears it feeds before rotating (the paper's first step)."""
    gptq_damp: float = 0.01
    """GPTQ only: dampening added to the Hessian diagonal, relative to its mean."""
    residual: bool = False
    """Experimental: rotate the residual stream itself (`rotate_residual_stream`) instead of each reader's input.
    RTN weights and dynamic activations only; such a model is evaluated in process (checkpoints do not hold it)."""
    random_signs: bool = True
    """Rotate by the randomized Hadamard Q = D·H (D a seeded ±1 diagonal per layer), as the paper does; off: H alone."""
    seed: int = 0
    """Seed of the random signs."""
    clip_grid: int = 0
    """GPTQ only: as GPTQ's option, the clipping search of each group's grid on the rotated weights."""
    max_shrink: float = 0.5
    """GPTQ only: largest fraction of a group's range the clipping search may cut away."""


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


class SignDraws:
    """The ±1 diagonals D of the randomized Hadamard Q = D·H, one independent draw per layer from one seed.

    Why: a Hadamard matrix has a constant column (Sylvester's and Paley's first, up to sign), so W·H puts each
    weight row's sum into one rotated column, which stretches its group's grid; with D the sum is spread like any
    other direction. Measured on held-out clips (docs/quarot.md): lower output error at W3 on average over seeds,
    with a seed-to-seed spread as large as the gain, so one fixed seed is the default, not a tuned one."""

    def __init__(self, seed: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self._gen = torch.Generator().manual_seed(seed)

    def draw(self, width: int) -> torch.Tensor | None:
        """The next layer's signs (None when signs are off)."""
        if not self.enabled:
            return None
        return torch.randint(0, 2, (width,), generator=self._gen).float() * 2 - 1


def rotated_weight(linear: nn.Linear, signs: torch.Tensor | None = None) -> torch.Tensor:
    """W·Q with Q = D·H (D = diag(signs), or none): the weight that, applied to the online-rotated input x·Q,
    gives the original xWᵀ. Fused in fp64 so the rotation adds no rounding of its own before the grid."""
    w = linear.weight.detach().double()
    return hadamard_transform(w if signs is None else w * signs.double()).float()


def rotated_layer(linear: nn.Linear, w_spec: QuantSpec, a_spec: QuantSpec, signs: torch.Tensor | None,
                  weight: torch.Tensor | None = None, **grid: torch.Tensor) -> QuantLinear:
    """The QuantLinear of a rotated linear: its input is rotated online, the signs ride along as the ±1 input
    divisor `in_scale` (x / D = x·D), so checkpoints and bundles carry them with no new layer field."""
    weight = rotated_weight(linear, signs) if weight is None else weight
    return to_quant_linear(linear, w_spec, a_spec, weight=weight, hadamard=True, in_scale=signs, **grid)


class RotatedLinear(nn.Module):
    """An FP linear on the rotated basis (input rotated online): the unquantized QuaRot layer, for checks."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.register_buffer("weight", rotated_weight(linear))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(hadamard_transform(x), self.weight.to(x), self.bias)


def rotate_fp(model: nn.Module, arch: ArchGraph, parts=("encoder", "decoder"), fold: bool = False) -> None:
    """Apply QuaRot's transform without quantizing (norms folded, every block linear rotated); exact in FP."""
    for part in parts:
        graph = arch.block_graph(part)
        for block in arch.blocks(model, part):
            if fold:
                fold_norms(block, graph)
            for path in graph.linears:
                replace_module(block, path, RotatedLinear(block.get_submodule(path)))


def _signed(x: torch.Tensor, signs: torch.Tensor | None) -> torch.Tensor:
    return x if signs is None else x * signs.to(x)


def _rotate(x: torch.Tensor, signs: torch.Tensor | None) -> torch.Tensor:
    """x·Q with Q = D·H over the last dimension."""
    return hadamard_transform(_signed(x, signs))


def _center_and_rotate(signs: torch.Tensor | None, _module: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook of a part's first block: its residual input enters centered and rotated, (x − x̄)·Q."""
    x = args[0]
    return (_rotate(x - x.mean(-1, keepdim=True), signs), *args[1:]), kwargs


def _unrotate(signs: torch.Tensor | None, _module: nn.Module, args: tuple):
    """Forward pre-hook of a part's final LayerNorm: it reads the stream back as x·Qᵀ = x·Hᵀ·D (its own mean
    subtraction makes the mean the stream dropped irrelevant), so its output — the encoder states, the head's
    input — is the FP one."""
    return (_signed(hadamard_transform(args[0], inverse=True), signs), *args[1:])


@torch.no_grad()
def rotate_residual_stream(model: nn.Module, arch: ArchGraph, parts=("encoder", "decoder"),
                           signs: SignDraws | None = None) -> dict[str, set[str]]:
    """The paper's fused rotation for LayerNorm models (SliceGPT's step): exact in FP.

    Every block norm's affine is folded into its readers and the norm becomes an RMSNorm; every residual
    writer's output is centered (W ← W − mean over outputs) and rotated (W ← Qᵀ·W), and the stream enters each
    part centered and rotated (a pre-hook on the first block), so it is always c(x)·Q and RMSNorm(c(x)·Q) =
    LayerNorm(x)·Q; the readers take W·Q and need no online rotation. The part's final LayerNorm reads the
    stream back unrotated, so the encoder states and the head are untouched (the tied head stays tied).
    Q = D·H with one sign draw per part when `signs` is given (H alone otherwise).
    Returns per block-graph part the linears that read the rotated stream directly (no online rotation).
    """
    direct: dict[str, set[str]] = {}
    for part in parts:
        graph = arch.block_graph(part)
        readers = {t for e in graph.edges if e.kind == "norm" for t in e.targets}
        direct[part] = readers
        blocks = arch.blocks(model, part)
        width = next(block.get_submodule(p).in_features for block in blocks[:1] for p in readers)
        d = None if signs is None else signs.draw(width)
        for block in blocks:
            fold_norms(block, graph)
            for edge in graph.edges:
                if edge.kind == "norm":
                    norm = block.get_submodule(edge.source)
                    replace_module(block, edge.source, nn.RMSNorm(norm.normalized_shape, eps=norm.eps,
                                                                  elementwise_affine=False))
            for path in readers:
                linear = block.get_submodule(path)
                linear.weight.copy_(_rotate(linear.weight.double(), d).to(linear.weight.dtype))
            for path in graph.residual_writers:
                linear = block.get_submodule(path)
                w = linear.weight.double()
                w = w - w.mean(0, keepdim=True)
                linear.weight.copy_(_rotate(w.T.contiguous(), d).T.to(linear.weight.dtype))
                if linear.bias is not None:
                    b = linear.bias.double()
                    linear.bias.copy_(_rotate(b - b.mean(), d).to(linear.bias.dtype))
        blocks[0].register_forward_pre_hook(functools.partial(_center_and_rotate, d), with_kwargs=True)
        final = arch.encoder_final_norm if part == "encoder" else arch.decoder_final_norm
        model.get_submodule(final).register_forward_pre_hook(functools.partial(_unrotate, d))
    return direct


@register("quarot", QuaRotOptions, calibrated=lambda options: options.weight_method == "gptq",
          summary="Hadamard rotation of every linear's input and weights (exact in FP) for W4A4/W4A8",
          input_vectors=lambda options: int(options.random_signs))  # the signs ride as each linear's in_scale
def quarot(job: QuantJob, options: QuaRotOptions) -> None:
    if options.weight_method not in ("rtn", "gptq"):
        raise QuantizationError(f"quarot weight_method must be 'rtn' or 'gptq', got {options.weight_method!r}")
    if not job.w_spec.enabled:
        raise QuantizationError("quarot needs weight bits 2-8 (the rotated weights are stored as codes); "
                                "supported: W2-8 with A4/A6/A8/A16")

    signs = SignDraws(options.seed, options.random_signs)
    if options.residual:
        if options.weight_method != "rtn" or (job.a_spec.enabled and not job.a_spec.dynamic):
            raise QuantizationError("quarot residual=true supports RTN weights with dynamic or no activation "
                                    "quantization; use the default per-linear rotation for GPTQ or static activations")
        direct = rotate_residual_stream(job.model, job.arch, job.recipe.parts, signs)
        for part, block, graph in job.blocks():
            for path in graph.linears:
                linear = block.get_submodule(path)
                layer = (to_quant_linear(linear, job.w_spec, job.a_spec) if path in direct[part]
                         else rotated_layer(linear, job.w_spec, job.a_spec, signs.draw(linear.in_features)))
                replace_module(block, path, layer)
        return
    if options.fold_norms:  # exact in FP, so every block can be folded before the walk sees any
        for _part, block, graph in job.blocks():
            fold_norms(block, graph)
    if options.weight_method == "gptq":
        def quantize(ctx, path, linear, stats):
            w_spec = job.w_spec_for(ctx.block, path)
            d = signs.draw(linear.in_features)
            hessian = stats.hessian if d is None else stats.hessian * torch.outer(d, d).to(stats.hessian)
            result = gptq_quantize(rotated_weight(linear, d), rotate_hessian(hessian), w_spec,
                                   damp=options.gptq_damp,  # Qᵀ·G·Q = Hᵀ·(D·G·D)·H
                                   hooks=GPTQHooks(w_spec, options.clip_grid, options.max_shrink))
            return rotated_layer(linear, w_spec, job.a_spec, d, weight=result.weight, scale=result.scale, zero=result.zero)

        walk_linears(job, quantize, true_sequential=False)
        return

    def rotate_block(block: nn.Module, graph: BlockGraph) -> None:
        for path in graph.linears:
            linear = block.get_submodule(path)
            replace_module(block, path, rotated_layer(linear, job.w_spec_for(block, path), job.a_spec,
                                                      signs.draw(linear.in_features)))

    if job.a_spec.enabled and not job.a_spec.dynamic:  # static activation grids are calibrated by the walk
        job.walk(lambda ctx: rotate_block(ctx.block, ctx.graph))
        return
    for _part, block, graph in job.blocks():
        rotate_block(block, graph)
