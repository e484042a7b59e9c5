"""Calibration statistics of linear inputs: the one collector every method uses.

Each method asks for what it needs. Per-channel ranges and mean |x| are always kept (cheap); the Gram
matrix Σ xᵀx on request (GPTQ's Hessian is 2/n of it; AWQ's exact weight-error search uses it); a seeded
sample of rows on request (searches that also quantize the activations).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from edgeasr.errors import QuantizationError
from edgeasr.quant.calibrate import BlockContext, hook_linear_inputs


@dataclass
class InputStats:
    """Per-channel statistics of one linear's input over a block's calibration inputs."""

    absmax: torch.Tensor
    min: torch.Tensor
    max: torch.Tensor
    sum_abs: torch.Tensor
    gram: torch.Tensor | None = None
    """Σ xᵀx over every row seen (None unless asked for)."""
    n: int = 0
    """Rows (tokens) seen."""
    rows: torch.Tensor | None = None
    """A seeded random sample of input rows (only when the collector was given `max_rows`)."""
    chunks: list[torch.Tensor] = field(default_factory=list, repr=False)
    """Rows kept while collecting, before `sample_rows` draws `rows` from them."""

    @classmethod
    def empty(cls, width: int, gram: bool = True) -> "InputStats":
        return cls(torch.zeros(width), torch.full((width,), torch.inf), torch.full((width,), -torch.inf),
                   torch.zeros(width), torch.zeros(width, width) if gram else None)

    @property
    def mean_abs(self) -> torch.Tensor:
        return self.sum_abs / max(self.n, 1)

    @property
    def hessian(self) -> torch.Tensor:
        """GPTQ's H = 2/n Σ x xᵀ."""
        if self.gram is None:
            raise QuantizationError("these statistics were collected without the Gram matrix (gram=True)")
        return self.gram * (2.0 / max(self.n, 1))

    def add(self, x: torch.Tensor, keep_rows: bool = False) -> None:
        """Accumulate a [rows, width] chunk of the input."""
        if not x.shape[0]:
            return
        self.absmax = torch.maximum(self.absmax, x.abs().amax(0))
        self.min = torch.minimum(self.min, x.amin(0))
        self.max = torch.maximum(self.max, x.amax(0))
        self.sum_abs += x.abs().sum(0)
        if self.gram is not None:
            self.gram.addmm_(x.T, x)
        if keep_rows:
            self.chunks.append(x.clone())
        self.n += x.shape[0]

    def sample_rows(self, max_rows: int, generator: torch.Generator) -> None:
        rows = torch.cat(self.chunks)
        self.chunks = []
        self.rows = rows[torch.randperm(rows.shape[0], generator=generator)[:max_rows]] if rows.shape[0] > max_rows else rows


class _AllSeen(Exception):
    """Raised once every requested linear has seen its input: the rest of the block need not run."""


@torch.inference_mode()
def collect_input_stats(ctx: BlockContext, paths: list[str] | tuple[str, ...], *, gram: bool = False,
                        max_rows: int = 0, transformed: bool = True, seed: int = 0) -> dict[str, InputStats]:
    """Run the block on each calibration input and accumulate each named linear's input statistics,
    stopping each block call as soon as all of them have been reached.

    With `transformed`, statistics are of what the matmul sees (after a FoldedLinear's / QuantLinear's
    own `transform_input`: folded shift and scale, online rotation), otherwise of the raw tensor.
    """
    paths = list(dict.fromkeys(paths))
    stats = {p: InputStats.empty(ctx.linear(p).in_features, gram) for p in paths}
    seen: set[str] = set()

    def observe(path: str, x: torch.Tensor) -> None:
        layer = ctx.linear(path)
        if transformed and hasattr(layer, "transform_input"):  # FoldedLinear and QuantLinear
            x = layer.transform_input(x).float()
        stats[path].add(x, keep_rows=max_rows > 0)
        seen.add(path)
        if len(seen) == len(stats):
            raise _AllSeen

    with hook_linear_inputs(ctx.block, paths, observe):
        for item in ctx.inputs:
            seen.clear()
            try:
                item.call(ctx.block)
            except _AllSeen:
                continue
            raise QuantizationError(f"{ctx.name}: linears {sorted(set(paths) - seen)} saw no calibration input")
    generator = torch.Generator().manual_seed(seed)
    for s in stats.values():
        if max_rows:
            s.sample_rows(max_rows, generator)
    return stats
