"""The bundle card (README.md): what is packed how, what the runtime approximates, what it costs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def card_notes(data: dict) -> list[str]:
    """Statements a user of the bundle must know; also used by `edgeasr export` to print them."""
    weights, recipe = data["weights"], data["recipe"] or {}
    layers = weights["layers"].values()
    notes = []
    if any(l["bits"] != l["storage_bits"] for l in layers):
        widths = sorted({(l["bits"], l["storage_bits"]) for l in layers if l["bits"] != l["storage_bits"]})
        notes.append("codes of " + ", ".join(f"{b} bits are stored in {s}-bit containers" for b, s in widths)
                     + " (MatMulNBits packs 2, 4 or 8): values and zero points are the method's own, the size is "
                     "that of the container")
    level = weights["accuracy_level"]
    if level == 4:
        where = "the decoder step" if weights.get("clip_accuracy_level", 4) != 4 else "every graph"
        notes.append(f"MatMulNBits runs with accuracy_level=4 in {where}: activations are quantized to int8 per "
                     "block on the fly, also for weight-only recipes")
    a_bits = recipe.get("a_bits", 16)
    if a_bits < 8:
        notes.append(f"the recipe quantizes activations to {a_bits} bits, but ONNX Runtime has no A{a_bits} kernel: "
                     "this bundle computes with int8 activations, so its accuracy is NOT the fake-quant model's")
    extras = Counter(e for l in layers for e in l["extras"])
    carried = {"in_scale": "Div by the per-channel scale", "in_shift": "Sub of the per-channel shift",
               "hadamard": "a Walsh–Hadamard butterfly of Add/Sub", "outlier_idx": "FP MatMul on the gathered "
               "outlier channels, masked out of the packed MatMul's int8 input", "sparse_idx": "a Gather × Mul "
               "scatter-added onto the packed MatMul's output (fp16 values + 16-bit row/column indices: 6 bytes "
               "per outlier on disk; ONNX Runtime widens them to fp32 / int64 at load, 20 bytes each in memory)"}
    for extra, count in sorted(extras.items()):
        notes.append(f"{count} layers carry {extra}: exported as {carried[extra]}")
    stats = [l["scale_stats"] for l in layers if l.get("scale_stats")]
    if stats:
        notes.append(f"{len(stats)} layers keep their block scales as {stats[0]['bits']}-bit codes with an fp16 "
                     f"(min, step) pair per {stats[0]['rows']} rows, as the method made them: stored as 4-bit "
                     f"containers + the pairs ({_mb(sum(s['bytes'] for s in stats))} in all); the graph expands them "
                     "to fp32 scales once, at load. Zero points are stored as MatMulNBits reads them.")
    real_zeros = sum(bool(l.get("float_zero")) for l in layers)
    if real_zeros:
        notes.append(f"{real_zeros} layers keep real-valued zero points, as the method fitted them (HQQ): stored as "
                     "fp16, one per block (16 bits instead of the grid's width), widened to fp32 by a Cast at load; "
                     "MatMulNBits reads them unpacked")
    front = weights.get("front_end_bits", 32)
    if front < 32:
        notes.append(f"the conv front end and the position tables are int{front} with one fp32 scale per row, "
                     "widened by DequantizeLinear before use")
    head, block = weights["head_bits"], weights["head_block_size"]
    kind = "FP32" if head == 16 else f"{head}-bit (min/max, blocks of {block})"
    notes.append(f"the tied token table / output head is {kind}; the lookup reads the head's own storage "
                 "(one copy on disk)")
    return notes


def bits_by_block(layers: dict[str, dict]) -> list[str]:
    """One line per block of a mixed-precision bundle: each linear's bits (the per-layer map, readable)."""
    blocks: dict[str, list[str]] = {}
    for name, layer in layers.items():
        block, _, leaf = name.rpartition(".")
        owner, _, kind = block.rpartition(".")
        key = owner if kind in ("self_attn", "encoder_attn", "mlp") else block
        blocks.setdefault(key, []).append(f"{name[len(key) + 1:]} {layer['bits']}")
    return [f"- {block}: {', '.join(items)}" for block, items in blocks.items()]


def write_card(path: Path, data: dict) -> None:
    sizes, recipe = data["sizes"], data["recipe"]
    bits = Counter(l["bits"] for l in data["weights"]["layers"].values())
    lines = [
        f"# {data['label']}", "",
        f"edgeasr bundle ({data['format']}) of a {data['family']} model for ONNX Runtime; run it with "
        "`edgeasr-listen --bundle DIR` or `edgeasr transcribe --bundle DIR` (numpy + onnxruntime + tokenizers only).",
        "",
        "## Recipe", "",
        "FP model (no quantized layers)" if recipe is None else
        f"method {recipe['method']}, W{'mixed' if recipe.get('layer_bits') else recipe['w_bits']} A{recipe['a_bits']}, "
        f"group {recipe['group_size'] or 'per channel'}"
        + "".join(f" ({b}-bit layers: group {g})" for b, g in sorted((recipe.get("group_size_at") or {}).items()))
        + f", {'symmetric' if recipe['symmetric'] else 'asymmetric'}; model {recipe['model']}",
        f"quantized linear layers: {sum(bits.values())} ({', '.join(f'{n} at {b} bits' for b, n in sorted(bits.items()))})",
        *(["", "## Bits per layer (mixed precision: recipe `layer_bits`)", "",
            *bits_by_block(data["weights"]["layers"])] if recipe and recipe.get("layer_bits") else []),
        "",
        "## Sizes", "",
        f"- weights in the graphs: {_mb(sizes['weight_bytes'])} ({sizes['ratio_to_fp32']:.3f}× the FP32 model's "
        f"{_mb(sizes['fp32_weight_bytes'])})",
        f"- token table / head: {_mb(sizes['head_bytes'])}",
        *([f"- effective bits per weight of the quantized layers: {sizes['effective_bits']:.3f} (codes, scales, "
           "zero points, outliers and statistics, as the method keeps them)"] if sizes.get("effective_bits") else []),
        f"- graphs, tokenizer and features (every file but this card and bundle.json): "
        f"{_mb(sizes['total_bytes_without_meta'])}, by part:",
        *[f"  - {part.replace('_', ' ')}: {_mb(n)}" for part, n in sizes["parts"].items()],
        "",
        "## Notes", "",
        *[f"- {n}" for n in card_notes(data)],
        "",
    ]
    path.write_text("\n".join(lines))
