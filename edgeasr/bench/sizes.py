"""Effective bits and total bytes for sweep rows written before the cells recorded them, from their recipes.

A row from an older sweep has its recipe (model, method, bits, group size, symmetric, options) but not its
storage. The quantized layers are the same for every method (the linears of the encoder and decoder
blocks), so the storage follows from the FP model's layer records and the method's storage layout as the
code ran it then: plain grids with fp16 scales; SpQR at groups of 16 with 3-bit statistics (zero points
quantized too from W4 up) whatever the recipe said; QUIK with its FP input channels. What a recipe does not
fix is not counted and the row says so (`sizes_note`): SpQR's sparse outliers (at most 1 % per column, up
to 0.48 bits per weight) and the per-channel vectors of AWQ / SmoothQuant / OS+ (16 bits per input
channel of some layers, below 0.05 bits per weight).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from edgeasr.metrics.bits import GridLayout, StatCodes, bundle_layer_bytes, layer_bits
from edgeasr.metrics.cost import size_from_layers
from edgeasr.metrics.layers import LayerInfo

log = logging.getLogger(__name__)

OLD_SPQR_GROUP = 16
"""SpQR's group size before it honoured the recipe's (rows without `effective_bits` ran at this)."""


def _fp_layers(model: str, cache: Path) -> list[LayerInfo]:
    """The FP model's layer records, cached in `cache` (loading a model needs torch and its weights)."""
    records = json.loads(cache.read_text()) if cache.exists() else {}
    if model not in records:
        from edgeasr.backends.layers import describe_layers
        from edgeasr.engine import Engine

        log.info("reading the layers of %s (once)", model)
        engine = Engine.load(model)
        records[model] = [l.to_dict() for l in describe_layers(engine.backend.model)]
        cache.write_text(json.dumps(records))
    return [LayerInfo(**r) for r in records[model]]


def _layout(layer: LayerInfo, row: dict) -> GridLayout:
    bits, method = row["w_bits"], row["method"]
    group = row.get("group_size") or layer.in_features
    symmetric = row.get("symmetric", False)  # every study recipe so far is asymmetric (min/max)
    layout = GridLayout(layer.out_features, layer.in_features, bits, group, symmetric, bias=True)
    if method == "spqr":
        stats = StatCodes(3, 16)
        layout = replace(layout, group_width=OLD_SPQR_GROUP, scale_stats=stats,
                         zero_stats=stats if 3 < bits else None)
    elif method == "quik":
        fp = min(64 if layer.name.endswith("fc2") else 32, layer.in_features // 8)
        layout = replace(layout, n_fp_channels=fp)
    return layout


NOTES = {"spqr": "SpQR outliers not counted (≤ 1 % of weights, ≤ 0.48 bits)",
         "awq": "per-channel scale vectors not counted (< 0.05 bits)",
         "smoothquant": "per-channel scale vectors not counted (< 0.05 bits)",
         "osplus": "per-channel shift/scale vectors not counted (< 0.1 bits)"}


def recipe_sizes(row: dict, cache: Path) -> dict:
    """`effective_bits`, `total_bytes` (what the bundle would hold) and a note for one old row."""
    layers = _fp_layers(row["model"], cache)
    if row["method"] != "fp":
        quantized = []
        for l in layers:
            if l.kind == "linear" and ".layers." in l.name and l.tied_to is None:
                g = _layout(l, row)
                l = replace(l, w_bits=row["w_bits"], weight_bytes=bundle_layer_bytes(g),
                            quant_bits=layer_bits(g).total)
            quantized.append(l)
        layers = quantized
    size = size_from_layers(layers)
    return {"effective_bits": size.effective_bits, "total_bytes": size.total_bytes,
            "sizes_from": "recipe", "sizes_note": NOTES.get(row["method"], "")}


def fill_sizes(rows: list[dict], cache: Path) -> list[dict]:
    """Rows with `effective_bits` / `total_bytes`, computed from the recipe where a row lacks them."""
    out = []
    for row in rows:
        if row.get("status") == "ok" and "total_bytes" not in row:
            row = {**row, **recipe_sizes(row, cache)}
        out.append(row)
    return out
