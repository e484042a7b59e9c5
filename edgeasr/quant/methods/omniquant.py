"""OmniQuant (Shao et al., 2024): learnable weight clipping + learnable equivalent transformation.

Each block is trained on its calibration inputs (what the already-quantized previous block produces) to
reproduce the outputs the float block gives on those same inputs, with the block's weights fake-quantized
through a straight-through rounding so gradients reach two sets of small parameters:

  * LWC, learnable weight clipping: per (row, group) the grid spans [σ(β)·min W, σ(γ)·max W] instead of
    [min W, max W]; γ, β start at 4 (σ = 0.98) and Adam learns how far to shrink each group's range.
  * LET, learnable equivalent transformation: on every foldable edge of the block (norm → q/k/v, v → o,
    norm → fc1, Moonshine's gated fc1 value → fc2, see `edgeasr.quant.arch`) a per-channel scale s (and,
    where the producing LayerNorm has a bias, a shift δ) turns X·W + b into ((X − δ)/s)·(s⊙W) + (b + δW).
    It migrates activation outliers into the weights and is learned jointly with the clipping. With
    activations quantized it starts from SmoothQuant/OS+-style scales and shifts, otherwise from the
    identity. (The paper uses LWC alone for weight-only; here LET measured better at W3 on Moonshine, so
    it is on by default; `let="auto"` gives the paper's choice.)

After training the learned transformation is folded into the norms and linears (exact in FP, through the
shared folding helpers) and the weights are put on the learned clipped grid.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call
from tqdm import tqdm

from edgeasr.errors import QuantizationError
from edgeasr.quant.calibrate import BlockContext, BlockInput, block_outputs
from edgeasr.quant.job import QuantJob, replace_module, to_quant_linear
from edgeasr.quant.methods import register
from edgeasr.quant.methods._folding import FoldedLinear, ScaleSite, apply_scale, apply_shift
from edgeasr.quant.methods._stats import collect_input_stats
from edgeasr.quant.spec import QuantSpec, fake_quant_activation, from_groups, grid_from_range, to_groups

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OmniQuantOptions:
    """Block-wise training of clipping and equivalent-transformation parameters."""

    epochs: int = 3
    """Passes over the block's calibration samples (one Adam step per sample)."""
    lwc_lr: float = 0.2
    """Adam learning rate of the clipping logits γ, β."""
    let_lr: float = 1e-2
    """Adam learning rate of the equivalent-transformation log-scales and shifts."""
    let: str = "on"
    """Learnable equivalent transformation: "on", "off", or "auto" (on only when activations are quantized)."""
    lwc_init: float = 4.0
    """Initial clipping logit (σ(4) = 0.982 of the group's min/max)."""
    alpha: float = 0.5
    """Migration strength of the SmoothQuant-style initial LET scale max|X|^α / max|W|^(1-α) (A-quant only)."""


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def _lwc_grid(w: torch.Tensor, up: torch.Tensor, low: torch.Tensor, spec: QuantSpec):
    """Scale and (STE-rounded) zero point of the clipped grid, per (row, group); differentiable.
    A symmetric grid has one range, clipped by `up` on both sides."""
    wg = to_groups(w, spec)
    hi = wg.amax(-1).clamp(min=0) * torch.sigmoid(up)
    lo = wg.amin(-1).clamp(max=0) * torch.sigmoid(up if spec.symmetric else low)
    scale, zero = grid_from_range(lo, hi, spec, rounding=_round_ste)
    return wg, scale, zero


def lwc_fake_quant(w: torch.Tensor, up: torch.Tensor, low: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    wg, scale, zero = _lwc_grid(w, up, low, spec)
    q = torch.clamp(_round_ste(wg / scale[..., None]) + zero[..., None], 0, spec.qmax)
    return from_groups((q - zero[..., None]) * scale[..., None], w.shape[1])


@torch.no_grad()
def lwc_qparams(w: torch.Tensor, up: torch.Tensor, low: torch.Tensor, spec: QuantSpec):
    _wg, scale, zero = _lwc_grid(w.float(), up, low, spec)
    return scale.clone(), zero.round().clone()


def _detach_clone(value):
    """Calibration tensors were captured in inference mode; training needs ordinary tensors."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, tuple):
        return tuple(_detach_clone(v) for v in value)
    if isinstance(value, list):
        return [_detach_clone(v) for v in value]
    if isinstance(value, dict):
        return {k: _detach_clone(v) for k, v in value.items()}
    return value


class _Site:
    """One learnable equivalent transformation: log-scale (and shift) on the input of `edge.targets`."""

    def __init__(self, edge, width: int, log_scale: torch.Tensor, shift: torch.Tensor | None) -> None:
        self.edge = edge
        self.log_scale = nn.Parameter(log_scale.clone().float())
        self.shift = None if shift is None else nn.Parameter(shift.clone().float())
        assert self.log_scale.numel() == width


class _BlockTrainer:
    def __init__(self, ctx: BlockContext, job: QuantJob, options: OmniQuantOptions, use_let: bool) -> None:
        self.ctx, self.job, self.options = ctx, job, options
        block, graph = ctx.block, ctx.graph
        self.spec = job.w_spec
        self.sites: list[_Site] = []
        if use_let:
            self._make_sites()
        self.linears = list(graph.linears)
        self.w0 = {p: block.get_submodule(p).weight.detach().float().clone() for p in self.linears}
        self.b0 = {p: None if block.get_submodule(p).bias is None else block.get_submodule(p).bias.detach().float().clone()
                   for p in self.linears}
        self.norm0 = {}
        for site in self.sites:
            if site.edge.kind == "norm":
                norm = block.get_submodule(site.edge.source)
                self.norm0[site.edge.source] = (norm.weight.detach().float().clone(),
                                                None if getattr(norm, "bias", None) is None else norm.bias.detach().float().clone())
        n_groups = {p: self.spec.n_groups(self.w0[p].shape[1]) for p in self.linears}
        init = options.lwc_init
        self.up = {p: nn.Parameter(torch.full((self.w0[p].shape[0], n_groups[p]), init)) for p in self.linears}
        self.low = {p: nn.Parameter(torch.full((self.w0[p].shape[0], n_groups[p]), init)) for p in self.linears}

    # ---- LET sites -------------------------------------------------------------------------------------
    def _make_sites(self) -> None:
        block, graph, job = self.ctx.block, self.ctx.graph, self.job
        edges = list(graph.edges)
        a_quant = job.a_spec.enabled
        stats = collect_input_stats(self.ctx, [e.targets[0] for e in edges]) if a_quant else {}
        for edge in edges:
            width = block.get_submodule(edge.targets[0]).in_features
            has_shift = edge.kind == "norm" and getattr(block.get_submodule(edge.source), "bias", None) is not None
            log_scale, shift = torch.zeros(width), (torch.zeros(width) if has_shift else None)
            if a_quant:
                st = stats[edge.targets[0]]
                if shift is not None:  # centre each channel (OS+ / OmniQuant shift initialisation)
                    shift = (st.max + st.min) / 2
                x_max = (st.max - shift).abs().maximum((st.min - shift).abs()) if shift is not None else st.absmax
                w_max = torch.stack([block.get_submodule(t).weight.detach().abs().amax(0) for t in edge.targets]).amax(0)
                s = x_max.clamp(min=1e-5).pow(self.options.alpha) / w_max.clamp(min=1e-5).pow(1 - self.options.alpha)
                log_scale = s.clamp(min=1e-5).log()
            if has_shift:  # the readers need a bias to absorb W·δ (exact: a zero bias until then)
                for t in edge.targets:
                    linear = block.get_submodule(t)
                    if linear.bias is None:
                        replace_module(block, t, FoldedLinear.wrap(linear, need_bias=True))
            self.sites.append(_Site(edge, width, log_scale, shift))

    def parameters(self):
        lwc = list(self.up.values()) + list(self.low.values())
        if self.spec.symmetric:
            lwc = list(self.up.values())
        let = [s.log_scale for s in self.sites] + [s.shift for s in self.sites if s.shift is not None]
        return lwc, let

    # ---- the transformed, fake-quantized block ----------------------------------------------------------
    def transformed(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | None], dict[str, tuple]]:
        """Float weights/biases after the LET (differentiable), and the norms' new affine parameters."""
        w = dict(self.w0)
        b = {p: (None if v is None else v) for p, v in self.b0.items()}
        norms = {}
        for site in self.sites:
            s = site.log_scale.exp()
            delta = site.shift
            edge = site.edge
            for t in edge.targets:
                if delta is not None:
                    b[t] = (b[t] if b[t] is not None else 0) + w[t] @ delta
                w[t] = w[t] * s[None, :]
            if edge.kind == "norm":
                gamma, beta = self.norm0[edge.source]
                new_beta = None if beta is None else (beta - (delta if delta is not None else 0)) / s
                norms[edge.source] = (gamma / s, new_beta)
            else:  # "linear": v_proj rows; "gated_value": the value half of fc1
                n = s.numel()
                src = edge.source
                w[src] = torch.cat([w[src][:n] / s[:, None], w[src][n:]]) if w[src].shape[0] > n else w[src] / s[:, None]
                if b[src] is not None:
                    b[src] = torch.cat([b[src][:n] / s, b[src][n:]]) if b[src].shape[0] > n else b[src] / s
        return w, b, norms

    def overrides(self) -> dict[str, torch.Tensor]:
        w, b, norms = self.transformed()
        out = {}
        for p in self.linears:
            out[f"{p}.weight"] = lwc_fake_quant(w[p], self.up[p], self.low[p], self.spec)
            if b[p] is not None:
                out[f"{p}.bias"] = b[p]
        for name, (gamma, beta) in norms.items():
            out[f"{name}.weight"] = gamma
            if beta is not None:
                out[f"{name}.bias"] = beta
        return out

    # ---- training ----------------------------------------------------------------------------------------
    def train(self, targets: list[torch.Tensor], bar: tqdm) -> float:
        block, a_spec = self.ctx.block, self.job.a_spec
        inputs = [BlockInput(_detach_clone(i.hidden), _detach_clone(i.args), _detach_clone(i.kwargs)) for i in self.ctx.inputs]
        targets = [t.detach().clone() for t in targets]
        lwc, let = self.parameters()
        groups = [{"params": lwc, "lr": self.options.lwc_lr}]
        if let:
            groups.append({"params": let, "lr": self.options.let_lr})
        opt = torch.optim.Adam(groups)
        handles = []
        if a_spec.enabled:  # activations fake-quantized per token with a straight-through estimator
            def act_hook(_m, args):
                x = args[0]
                return (x + (fake_quant_activation(x, a_spec) - x).detach(),)
            handles = [block.get_submodule(p).register_forward_pre_hook(act_hook) for p in self.linears]
        generator = torch.Generator().manual_seed(self.job.recipe.calibration.seed + self.ctx.index)
        last = float("nan")
        try:
            with torch.enable_grad():
                for _epoch in range(self.options.epochs):
                    total = 0.0
                    for i in torch.randperm(len(inputs), generator=generator).tolist():
                        item = inputs[i]
                        out = functional_call(block, self.overrides(), (item.hidden, *item.args), item.kwargs)
                        out = out[0] if isinstance(out, tuple) else out
                        loss = torch.nn.functional.mse_loss(out, targets[i])
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        total += loss.item()
                    last = total / max(len(inputs), 1)
                    bar.set_postfix_str(f"{self.ctx.name} loss {last:.3g}")
                    bar.update(1)
        finally:
            for h in handles:
                h.remove()
        return last

    # ---- fold and quantize -------------------------------------------------------------------------------
    @torch.no_grad()
    def finish(self) -> None:
        block, job = self.ctx.block, self.job
        for site in self.sites:
            edge = ScaleSite(site.edge.source, site.edge.targets, site.edge.kind)
            if site.shift is not None:
                apply_shift(block, edge, site.shift.detach())
            apply_scale(block, edge, site.log_scale.detach().exp())
        for p in self.linears:
            linear = block.get_submodule(p)
            scale, zero = lwc_qparams(linear.weight.detach(), self.up[p].detach(), self.low[p].detach(), self.spec)
            extras = {n: getattr(linear, n, None) for n in ("in_scale", "in_shift")}
            replace_module(block, p, to_quant_linear(linear, job.w_spec, job.a_spec, scale=scale, zero=zero,
                                                     **{k: v for k, v in extras.items() if v is not None}))


@register("omniquant", OmniQuantOptions, calibrated=True,
          summary="block-wise training of learnable weight clipping and equivalent transformation (LWC + LET)")
def omniquant(job: QuantJob, options: OmniQuantOptions) -> None:
    if options.let not in ("auto", "on", "off"):
        raise QuantizationError(f"omniquant let must be 'auto', 'on' or 'off', got {options.let!r}")
    if not job.w_spec.enabled:
        raise QuantizationError("omniquant needs weight bits 2-8 (its clipping is learned on the weight grid)")
    if job.w_spec.granularity == "tensor":
        raise QuantizationError("omniquant learns clipping per group or per channel; use --group-size N or 0")
    if options.epochs < 1:
        raise QuantizationError(f"omniquant epochs must be ≥ 1, got {options.epochs}")
    use_let = options.let == "on" or (options.let == "auto" and job.a_spec.enabled)
    n_blocks = sum(1 for _ in job.blocks())
    bar = tqdm(total=n_blocks * options.epochs, desc="omniquant epochs", unit="epoch", leave=False)

    def process(ctx: BlockContext) -> None:
        targets = block_outputs(ctx.block, ctx.inputs)  # the float block on the quantized model's inputs
        trainer = _BlockTrainer(ctx, job, options, use_let)
        loss = trainer.train(targets, bar)
        log.debug("%s: final loss %.4g", ctx.name, loss)
        trainer.finish()

    try:
        job.walk(process)
    finally:
        bar.close()
