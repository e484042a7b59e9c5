"""Which layers got which bits: a mixed recipe's `layer_bits` drawn as a block × sublayer grid per stack.

Whisper and Moonshine name their linears alike (`model.{encoder,decoder}.layers.N.{self_attn,encoder_attn}.q_proj`,
`fc1` / `mlp.fc1`, Whisper's `out_proj` for Moonshine's `o_proj`), so one column order serves both families.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

COLUMNS = ("self q", "self k", "self v", "self o", "cross q", "cross k", "cross v", "cross o", "fc1", "fc2")
"""Sublayers in the order data flows through a block (the encoder has no cross-attention columns)."""

_LINEAR = re.compile(r"model\.(encoder|decoder)\.layers\.(\d+)\.(.+)")


def sublayer(rest: str) -> str:
    """`self_attn.out_proj` → `self o`, `encoder_attn.q_proj` → `cross q`, `mlp.fc1` → `fc1`."""
    rest = rest.removeprefix("mlp.").replace("self_attn.", "self ").replace("encoder_attn.", "cross ")
    return rest.removesuffix("_proj").replace(" out", " o")


def layer_grid(layer_bits: dict[str, int]) -> dict[str, tuple[list[str], np.ndarray]]:
    """stack → (its columns, bits as a blocks × columns array; NaN where the stack has no such linear)."""
    found: dict[str, dict[tuple[int, str], int]] = {}
    for path, bits in layer_bits.items():
        match = _LINEAR.fullmatch(path)
        if match is None:
            raise ValueError(f"{path} is not a block linear of an encoder or decoder stack")
        stack, block, rest = match.groups()
        name = sublayer(rest)
        if name not in COLUMNS:
            raise ValueError(f"{path}: no column for the sublayer {name!r}")
        found.setdefault(stack, {})[(int(block), name)] = bits
    grids = {}
    for stack, cells in found.items():
        columns = [c for c in COLUMNS if any(name == c for _, name in cells)]
        grid = np.full((1 + max(b for b, _ in cells), len(columns)), np.nan)
        for (block, name), bits in cells.items():
            grid[block, columns.index(name)] = bits
        grids[stack] = (columns, grid)
    return grids


def plot_layer_maps(maps: list[tuple[str, dict[str, int]]], path: Path) -> Path:
    """One row of panels (encoder, decoder) per (title, layer_bits) pair, colour = bits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import BoundaryNorm, ListedColormap

    cmap = ListedColormap(["tab:red", "tab:orange", "tab:green"])
    norm = BoundaryNorm([1, 3, 6, 9], cmap.N)  # 2 → red, 4 → orange, 8 → green
    fig, axes = plt.subplots(len(maps), 2, figsize=(11, 2.8 * len(maps)), squeeze=False, layout="constrained")
    for row_axes, (title, layer_bits) in zip(axes, maps):
        grids = layer_grid(layer_bits)
        for ax, stack in zip(row_axes, ("encoder", "decoder")):
            columns, grid = grids[stack]
            image = ax.imshow(grid, cmap=cmap, norm=norm, aspect="auto")
            ax.set_xticks(range(len(columns)), columns, fontsize=7, rotation=45, ha="right")
            ax.set_yticks(range(grid.shape[0]))
            ax.set_ylabel("block")
            ax.set_title(f"{title}: {stack}" if stack == "encoder" else stack, fontsize=8, loc="left")
    fig.colorbar(image, ax=axes, ticks=[2, 4, 8], label="weight bits", shrink=0.6)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
