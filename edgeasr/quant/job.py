"""QuantJob: what a method gets to work with, and the shared steps every method ends with."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from edgeasr.quant.arch import ArchGraph, BlockGraph, graph_for
from edgeasr.quant.calibrate import BlockContext, CalibrationClip, hook_linear_inputs, load_calibration_clips, walk_blocks
from edgeasr.quant.layers import QuantLinear
from edgeasr.quant.recipe import Recipe
from edgeasr.quant.spec import QuantSpec, grid_from_range, quantize_weight, weight_qparams

log = logging.getLogger(__name__)


def replace_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def to_quant_linear(linear: nn.Linear, w_spec: QuantSpec, a_spec: QuantSpec, weight: torch.Tensor | None = None,
                    clip: torch.Tensor | float = 1.0, scale: torch.Tensor | None = None,
                    zero: torch.Tensor | None = None, **extras) -> QuantLinear:
    """Put `weight` (default: the linear's own) on the grid and wrap it as a QuantLinear.

    Methods that searched their own grid pass `scale`/`zero` (or a `clip` ratio); the rest get min/max.
    """
    w = (linear.weight if weight is None else weight).detach().float()
    if scale is None:
        scale, zero = weight_qparams(w, w_spec, clip)
    codes = quantize_weight(w, scale, zero, w_spec)
    bias = None if linear.bias is None else linear.bias.detach().float()
    return QuantLinear.from_codes(codes, scale, zero, bias, w_spec, a_spec, **extras)


@dataclass
class QuantJob:
    """One model being quantized under one recipe."""

    backend: object
    """The `HFBackend` whose model is changed in place."""
    recipe: Recipe
    arch: ArchGraph = field(init=False)
    _clips: list[CalibrationClip] | None = field(default=None, init=False)
    _block_names: dict[int, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.arch = graph_for(self.model)
        # blocks keep their identity while their linears are replaced: a block's path is found from it
        self._block_names = {id(block): f"{self.arch.encoder_blocks if part == 'encoder' else self.arch.decoder_blocks}.{i}"
                             for part in ("encoder", "decoder") for i, block in enumerate(self.arch.blocks(self.model, part))}

    @property
    def model(self) -> nn.Module:
        return self.backend.model

    @property
    def w_spec(self) -> QuantSpec:
        return self.recipe.w_spec

    def w_spec_for(self, block: nn.Module, path: str) -> QuantSpec:
        """The weight spec of linear `path` inside `block`: the recipe's per-layer bits where it has them."""
        return self.recipe.w_spec_for(f"{self._block_names[id(block)]}.{path}")

    @property
    def a_spec(self) -> QuantSpec:
        return self.recipe.a_spec

    @property
    def clips(self) -> list[CalibrationClip]:
        if self._clips is None:
            self._clips = load_calibration_clips(self.recipe.calibration)
        return self._clips

    def calibration_stats(self) -> dict:
        """How much calibration audio the job used, in the units the code uses: sequences (what `n_clips`
        counts) and the utterances joined into them; empty when the method needed none."""
        if self._clips is None:
            return {}
        return {"calibration_sequences": len(self._clips),
                "calibration_utterances": sum(c.utterances for c in self._clips),
                "calibration_seconds": round(sum(c.audio.size for c in self._clips) / 16000, 1)}

    def blocks(self) -> Iterator[tuple[str, nn.Module, BlockGraph]]:
        for part in self.recipe.parts:
            for block in self.arch.blocks(self.model, part):
                yield part, block, self.arch.block_graph(part)

    def walk(self, process: Callable[[BlockContext], None], desc: str | None = None) -> None:
        """Run `process` on every block with calibration inputs, then calibrate static activations."""

        def step(ctx: BlockContext) -> None:
            process(ctx)
            if self.a_spec.enabled and not self.a_spec.dynamic:
                calibrate_static_activations(ctx)

        walk_blocks(self.backend, self.arch, self.recipe.parts, self.clips, self.recipe.calibration, step,
                    desc or f"{self.recipe.method} w{self.recipe.w_bits}a{self.recipe.a_bits}")


@torch.inference_mode()
def calibrate_static_activations(ctx: BlockContext) -> None:
    """Fix each QuantLinear's activation grid from the min/max its (transformed) inputs reach."""
    layers = {p: ctx.linear(p) for p in ctx.graph.linears if isinstance(ctx.linear(p), QuantLinear)}
    lo = {p: torch.tensor(0.0) for p in layers}
    hi = {p: torch.tensor(0.0) for p in layers}

    def observe(path: str, x: torch.Tensor) -> None:
        x = layers[path].transform_input(x)
        if layers[path].outlier_idx is not None:  # FP outlier channels are not on the activation grid
            x = x.index_fill(-1, layers[path].outlier_idx, 0.0)
        lo[path] = torch.minimum(lo[path], x.min())
        hi[path] = torch.maximum(hi[path], x.max())

    saved = {p: (l.a_spec, l.act_scale) for p, l in layers.items()}
    for layer in layers.values():  # observe unquantized inputs
        layer.a_spec = QuantSpec(16)
    with hook_linear_inputs(ctx.block, list(layers), observe):
        ctx.run()
    for path, layer in layers.items():
        spec = saved[path][0]
        layer.a_spec = spec
        scale, zero = grid_from_range(lo[path], hi[path], spec)
        layer.act_scale = scale.reshape(1)
        layer.act_zero = zero.reshape(1)
