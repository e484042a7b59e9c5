"""Scale and shift folding shared by the equivalent-transformation methods (AWQ, SmoothQuant, OS+).

A per-input-channel scale `s` on a linear's input is moved into the op that produces that input, so the
float model computes exactly the same function while the linear's weight columns grow by `s` and its
input channels shrink by `s`:

  * `norm`         LayerNorm weight (and bias) divided by s;
  * `linear`       the producing linear's output rows (and bias) divided by s (v_proj → o_proj: attention
                   mixes value rows with weights that do not depend on them, so the scale passes through);
  * `gated_value`  Moonshine's gated MLP: the value half of fc1 divided by s (SiLU(gate) · value is linear
                   in value);
  * `layer`        no previous op can take it (fc2 behind a GELU, cross-attention K/V reading the encoder
                   output): the scale stays on the layer as QuantLinear `in_scale`.

A per-channel shift δ (OS+) is subtracted the same way: into a LayerNorm bias when the norm has one,
into the producing linear's bias for v → o (attention rows sum to one), otherwise kept on the layer as
QuantLinear `in_shift`; every target linear gets the correction W·δ added to its bias.

Until the block is quantized, a linear that carries a leftover scale/shift (or needs a bias it did not
have) is a `FoldedLinear`: a float `nn.Linear` with the same `in_scale` / `in_shift` semantics as
`QuantLinear`, so the block still runs in float and folding can be checked for exactness.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgeasr.errors import QuantizationError
from edgeasr.quant.arch import BlockGraph
from edgeasr.quant.job import replace_module, to_quant_linear
from edgeasr.quant.methods._stats import InputStats
from edgeasr.quant.spec import QuantSpec, fake_quant_activation, fake_quant_weight, grid_from_range


# ---- where a scale can go -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ScaleSite:
    """Linears sharing one input, and the op (if any) whose output channels can absorb a scale on it."""

    source: str | None
    targets: tuple[str, ...]
    kind: str
    """"norm", "linear", "gated_value" (folded into `source`) or "layer" (kept on each target)."""

    @property
    def input_path(self) -> str:
        """The linear whose input stands for the whole site (all targets read the same tensor)."""
        return self.targets[0]


def scale_sites(graph: BlockGraph, keep_on_layer: bool = True) -> list[ScaleSite]:
    """The fold edges of a block, plus (with `keep_on_layer`) one site per linear no op can absorb into:
    the unfoldable ones (fc2 behind GELU) and the cross-attention K/V reading the encoder output."""
    sites = [ScaleSite(e.source, e.targets, e.kind) for e in graph.edges]
    if keep_on_layer:
        sites += [ScaleSite(None, (path,), "layer") for path in graph.unfoldable]
        if graph.external_inputs:
            sites.append(ScaleSite(None, tuple(graph.external_inputs), "layer"))
    return sites


# ---- a float linear carrying leftover transforms ------------------------------------------------------

class FoldedLinear(nn.Linear):
    """Float stand-in for a linear whose input carries a scale/shift no previous op absorbed."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias)
        self.register_buffer("in_scale", None)
        self.register_buffer("in_shift", None)
        self.bias_shift: torch.Tensor | None = None
        """The shift δ (in the coordinates the matmul sees) whose W·δ was added to the bias; once the weights
        are rounded the correction is redone with the rounded weights."""

    @classmethod
    def wrap(cls, linear: nn.Linear, need_bias: bool = False) -> "FoldedLinear":
        if isinstance(linear, cls) and (linear.bias is not None or not need_bias):
            return linear
        w = linear.weight
        new = cls(linear.in_features, linear.out_features, bias=True if need_bias else linear.bias is not None)
        new = new.to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            new.weight.copy_(w)
            if new.bias is not None:
                new.bias.copy_(linear.bias if linear.bias is not None else torch.zeros_like(new.bias))
        new.in_scale = getattr(linear, "in_scale", None)
        new.in_shift = getattr(linear, "in_shift", None)
        new.bias_shift = getattr(linear, "bias_shift", None)
        return new

    def transform_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_shift is not None:
            x = x - self.in_shift
        if self.in_scale is not None:
            x = x / self.in_scale
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform_input(x), self.weight, self.bias)


def _folded(block: nn.Module, path: str, need_bias: bool = False) -> FoldedLinear:
    linear = block.get_submodule(path)
    wrapped = FoldedLinear.wrap(linear, need_bias)
    if wrapped is not linear:
        replace_module(block, path, wrapped)
    return wrapped


def _check_width(block: nn.Module, site: ScaleSite, vector: torch.Tensor) -> None:
    widths = {block.get_submodule(t).in_features for t in site.targets}
    if widths != {vector.numel()}:
        raise QuantizationError(f"a {vector.numel()}-channel factor cannot fold into {site.targets} (input widths {widths})")


# ---- folding ------------------------------------------------------------------------------------------

@torch.no_grad()
def apply_scale(block: nn.Module, site: ScaleSite, s: torch.Tensor) -> None:
    """Divide the site's input channels by `s` and multiply the targets' weight columns by `s` (exact in FP)."""
    s = s.detach().float()
    _check_width(block, site, s)
    if site.kind == "norm":
        norm = block.get_submodule(site.source)
        norm.weight.div_(s.to(norm.weight))
        if getattr(norm, "bias", None) is not None:
            norm.bias.div_(s.to(norm.bias))
    elif site.kind in ("linear", "gated_value"):
        source = block.get_submodule(site.source)
        rows = slice(0, s.numel())  # the value half of fc1 comes first (hidden, gate = fc1(x).chunk(2))
        if site.kind == "linear" and source.out_features != s.numel():
            raise QuantizationError(f"{site.source} has {source.out_features} outputs, {site.targets} read {s.numel()}")
        if site.kind == "gated_value" and source.out_features != 2 * s.numel():
            raise QuantizationError(f"{site.source} is not a gated [value; gate] projection of width 2×{s.numel()}")
        source.weight[rows].div_(s[:, None].to(source.weight))
        if source.bias is not None:
            source.bias[rows].div_(s.to(source.bias))
    elif site.kind != "layer":
        raise QuantizationError(f"unknown fold kind {site.kind!r}; known: norm, linear, gated_value, layer")
    for path in site.targets:
        linear = _folded(block, path) if site.kind == "layer" else block.get_submodule(path)
        linear.weight.mul_(s.to(linear.weight))
        if getattr(linear, "bias_shift", None) is not None:  # W·δ is invariant: (W·s)·(δ/s)
            linear.bias_shift = linear.bias_shift / s
        if site.kind == "layer":  # f(u) = (u - shift) / scale becomes f(u) / s
            linear.in_scale = s.clone() if linear.in_scale is None else linear.in_scale * s
        elif getattr(linear, "in_shift", None) is not None:  # the source now emits u / s
            linear.in_shift = linear.in_shift / s


@torch.no_grad()
def apply_shift(block: nn.Module, site: ScaleSite, delta: torch.Tensor) -> None:
    """Subtract `delta` from what the site's linears multiply, adding W·δ to their biases (exact in FP).

    δ is in the coordinates the matmul sees. It goes into a LayerNorm's bias when the norm has one, into
    the producing linear's bias for v → o, and otherwise stays on each target as `in_shift`.
    """
    delta = delta.detach().float()
    _check_width(block, site, delta)
    for path in site.targets:  # bias correction with the current weights, before anything moves
        linear = _folded(block, path, need_bias=True)
        linear.bias.add_((linear.weight.float() @ delta).to(linear.bias))
        linear.bias_shift = delta.clone() if linear.bias_shift is None else linear.bias_shift + delta
    source = block.get_submodule(site.source) if site.source else None
    fold_norm = site.kind == "norm" and getattr(source, "bias", None) is not None
    if fold_norm or site.kind == "linear":
        if any(getattr(block.get_submodule(t), "in_scale", None) is not None for t in site.targets):
            raise QuantizationError(f"shift {site.targets} before scaling them: a scale already sits on the layer")
        if fold_norm:
            source.bias.sub_(delta.to(source.bias))
        else:
            _folded(block, site.source, need_bias=True).bias.sub_(delta)
        return
    for path in site.targets:
        linear = _folded(block, path)
        shift = delta if linear.in_scale is None else delta * linear.in_scale  # f(u) - δ = (u - shift - δ·scale)/scale
        linear.in_shift = shift.clone() if linear.in_shift is None else linear.in_shift + shift


def quantize_block_linears(block: nn.Module, graph: BlockGraph, w_spec: QuantSpec, a_spec: QuantSpec,
                           clips: dict[str, torch.Tensor] | None = None,
                           layer_specs: dict[str, QuantSpec] | None = None) -> None:
    """Replace every linear of the block with a QuantLinear, carrying leftover in_scale/in_shift along
    (at its `layer_specs` entry where given: per-layer bits, else `w_spec`).

    A shift's bias correction W·δ becomes Q(W)·δ, so the rounding error of W multiplies x, not x − δ
    (the shift then changes only how the activations round).
    """
    clips = clips or {}
    for path in graph.linears:
        linear = block.get_submodule(path)
        extras = {name: getattr(linear, name, None) for name in ("in_scale", "in_shift")}
        layer = to_quant_linear(linear, (layer_specs or {}).get(path, w_spec), a_spec, clip=clips.get(path, 1.0),
                                **{k: v for k, v in extras.items() if v is not None})
        delta = getattr(linear, "bias_shift", None)
        if delta is not None:
            with torch.no_grad():
                layer.bias += (layer.dequantized_weight() - linear.weight.detach().float()) @ delta
        replace_module(block, path, layer)


# ---- scoring a candidate transformation -------------------------------------------------------------------

def fake_quant_weight_or_fp(w: torch.Tensor, spec: QuantSpec, clip: torch.Tensor | float = 1.0) -> torch.Tensor:
    return fake_quant_weight(w, spec, clip) if spec.enabled else w


def fake_quant_activation_for_search(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Activation round trip as the deployed layer will do it: per token when dynamic, else one grid
    from the min/max of the rows at hand (what static calibration will fix)."""
    if not spec.enabled or spec.dynamic:
        return fake_quant_activation(x, spec)
    scale, zero = grid_from_range(x.min().clamp(max=0), x.max().clamp(min=0), spec)
    return fake_quant_activation(x, spec, scale, zero)


class SiteScorer:
    """Scores candidate (scale, shift) pairs of one site: Σ_targets ‖Q_w(W') · (Q_a(z) + δ') − W·x‖² over
    calibration tokens, with W' = W·diag(s), z = (x − δ)/s, δ' = δ/s — the shifted, scaled layer whose bias
    correction uses the rounded weights (as `quantize_block_linears` builds it) against the float layer.

    The weights are the targets' current ones (before the candidate is applied; a shift already applied
    changes only biases); `stats` describes their current input x. Weight-only with no shift uses the Gram
    matrix (all tokens, exact); otherwise the sampled rows.
    """

    def __init__(self, block: nn.Module, site: ScaleSite, stats: InputStats, w_spec: QuantSpec,
                 a_spec: QuantSpec) -> None:
        self.stats, self.w_spec, self.a_spec = stats, w_spec, a_spec
        self.weights = [block.get_submodule(t).weight.detach().float() for t in site.targets]
        self._reference: list[torch.Tensor] | None = None

    @torch.inference_mode()
    def __call__(self, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None) -> float:
        st = self.stats
        s = torch.ones_like(st.absmax) if scale is None else scale.float()
        if not self.a_spec.enabled and shift is None and st.gram is not None:
            gram = st.gram / s[:, None] / s[None, :]
            total = 0.0
            for weight in self.weights:
                w = weight * s
                d = fake_quant_weight_or_fp(w, self.w_spec) - w
                total += float(((d @ gram) * d).sum())
            return total
        if st.rows is None:
            raise QuantizationError("scoring activation quantization or a shift needs sampled rows "
                                    "(collect_input_stats(max_rows=...))")
        if self._reference is None:  # W'·(z + δ') is W·x whatever the candidate
            self._reference = [st.rows @ weight.T for weight in self.weights]
        x = st.rows if shift is None else st.rows - shift
        xq = fake_quant_activation_for_search(x / s, self.a_spec)
        if shift is not None:
            xq = xq + shift / s
        total = 0.0
        for weight, reference in zip(self.weights, self._reference):
            wq = fake_quant_weight_or_fp(weight * s, self.w_spec)
            total += float(((xq @ wq.T - reference) ** 2).sum())
        return total
