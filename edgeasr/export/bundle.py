"""`export_bundle`: a quantized checkpoint (or an FP model) → a bundle directory the runtime loads.

Order of work: load the model, pack every QuantLinear's codes and the tied head, swap stand-ins in,
trace the three graphs, rewrite the marked ops into packed ones, then write tokenizer, features,
generation settings, recipe, sizes and hashes, atomically (a half-written bundle never looks whole).
"""

from __future__ import annotations

import json
import logging
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from edgeasr.errors import QuantizationError
from edgeasr.export.card import write_card
from edgeasr.export.graphs import (VERSION, LinearStandIn, graph_specs, shapes_of, swap_quantized_layers,
                                   token_table, trace_key, traced_graph)
from edgeasr.export.packing import PackedWeight, ScaleStats, pack_quantized, pack_table
from edgeasr.export.rewrite import HEAD, check_complete, conv_weights, quantize_initializers, rewrite_graph
from edgeasr.metrics.bits import DEFAULT_HEAD_BITS, DEFAULT_HEAD_BLOCK, FP32_BYTES, FRONT_END_BITS, row_int8_bytes
from edgeasr.metrics.cost import model_effective_bits
from edgeasr.metrics.layers import LayerInfo
from edgeasr.runtime.bundle import ARCHIVE_SUFFIX, FORMAT, META, content_hash, file_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportOptions:
    """How a checkpoint becomes a bundle."""

    head_bits: int | None = DEFAULT_HEAD_BITS
    """Bits of the tied token table / output head (4 or 8; None or 16 keeps it FP)."""
    head_group_size: int = DEFAULT_HEAD_BLOCK
    """Largest block for the head (shrunk to a power of two dividing the model width)."""
    front_end_bits: int | None = FRONT_END_BITS
    """Conv front end and position tables: 8 = int8 with one scale per row; None keeps them FP32. An FP
    model's export (no checkpoint) keeps them FP32 whatever this says: it is the reference."""
    accuracy_level: int = 4
    """MatMulNBits compute of the decoder step (a few rows per call): 4 = int8 activations per block, 3-5x
    faster than fp32 compute there (1 row of 384 x 1536: 31 vs 113 us at W4, 31 vs 577 us at W8, 2 cores)."""
    clip_accuracy_level: int = 1
    """MatMulNBits compute of the graphs that run once over the whole clip (encoder, cross-attention K/V): 1 =
    fp32. With hundreds of rows per call quantizing the activations costs more than the int8 dot products save
    on CPUs without VNNI (whisper-tiny.en's 30 s encoder: W8 462 -> 400 ms, W4 415 -> 330 ms at 1 vs 4);
    boards with int8 dot-product instructions may prefer 4."""
    archive: bool = False
    """Also write DIR.edgeasr.tar, one file to copy to a board."""


def _load(checkpoint: Path | None, model_name: str | None):
    """(model, processor directory, recipe or None, source label)."""
    if checkpoint is not None:
        from edgeasr.quant.checkpoint import load_checkpoint

        model, directory, recipe = load_checkpoint(checkpoint)
        return model, Path(directory), recipe, recipe.label
    from edgeasr.backends.hf import HFBackend
    from edgeasr.zoo import resolve_model_dir

    location, _ = resolve_model_dir(model_name)
    if not Path(str(location)).is_dir():
        raise QuantizationError(f"export needs a local model directory; {model_name} resolved to {location}")
    return HFBackend.from_pretrained(location).model, Path(location), None, f"{Path(model_name).name}-fp32"


def _pack_layers(model) -> dict[int, PackedWeight]:
    from edgeasr.quant.layers import QuantLinear

    def stats(m: QuantLinear) -> ScaleStats | None:
        if m.scale_codes is None:
            return None
        return ScaleStats(m.scale_codes.numpy(), m.scale_stats.numpy(), m.stat_group, m.stat_bits)

    return {id(m): pack_quantized(m.codes, m.scale, m.zero, m.w_spec, stats(m), m.float_zero)
            for m in model.modules() if isinstance(m, QuantLinear)}


def _names_by_id(layers: dict) -> dict[int, str]:
    return {id(m): name for name, m in layers.items()}


def _layer_report(model, packed: dict[int, PackedWeight]) -> dict[str, dict]:
    from edgeasr.quant.layers import QuantLinear

    report = {}
    for name, m in model.named_modules():
        if isinstance(m, QuantLinear):
            p = packed[id(m)]
            report[name] = {"bits": p.code_bits, "storage_bits": p.bits, "block_size": p.block_size, "k": p.k,
                            "n": p.n, "a_bits": m.a_spec.bits, "packed_bytes": p.nbytes, "float_zero": p.float_zero,
                            "tail": None if p.tail is None else {"k": p.tail.k, "block_size": p.tail.block_size},
                            "effective_bits": m.storage_bits().to_dict(),
                            "scale_stats": None if p.scale_stats is None else
                            {"bits": p.scale_stats.bits, "rows": p.scale_stats.rows, "bytes": p.scale_stats.nbytes},
                            "extras": [e for e in ("in_scale", "in_shift", "outlier_idx", "sparse_idx")
                                       if getattr(m, e) is not None] + (["hadamard"] if m.hadamard else [])}
    return report


def _write_graph(spec, name: str, key: str, directory: Path, packed_by_id: dict[int, PackedWeight],
                 head: PackedWeight | None, accuracy_level: int, front_end: bool) -> tuple[dict, dict, dict]:
    """Trace (or reuse the trace), rewrite, and save one graph with its weights in a side file.

    Returns the graph's initializer bytes by name, per packed layer id [graph, stand-in path], and the
    initializer bytes by part (`_part_of`).
    """
    model = traced_graph(spec, name, key)
    stand_ins = {path: m.layer for path, m in spec.module.named_modules() if isinstance(m, LinearStandIn)}
    targets = {path: packed_by_id[id(layer)] for path, layer in stand_ins.items()}
    if name == "decoder":
        targets[HEAD] = head
    done = rewrite_graph(model, targets, accuracy_level)
    front = conv_weights(model)
    positions = {t.name for t in model.graph.initializer if "embed_positions" in t.name}
    if front_end:
        quantize_initializers(model, front | positions)
    # The exporter tags every node with its torch stack trace and module path (a third of a W4 bundle's
    # bytes, and this machine's paths): a deployed graph needs none of it.
    for node in model.graph.node:
        del node.metadata_props[:]
        if node.name.startswith("node_"):  # the exporter's generated names; ours name the layer they run
            node.name = ""
    del model.graph.value_info[:]  # intermediate shape annotations: ONNX Runtime infers them at load
    # Weights in a side file: ONNX Runtime maps it instead of copying it onto the heap.
    onnx.save(model, directory / f"{name}.onnx", save_as_external_data=True, location=f"{name}.onnx.data",
              size_threshold=1024)
    sizes = {t.name: int(np.prod(t.dims)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
             for t in model.graph.initializer}
    parts: dict[str, int] = {}
    for tensor, nbytes in sizes.items():
        part = _part_of(tensor, set(stand_ins), front, positions)
        parts[part] = parts.get(part, 0) + nbytes
    return sizes, {id(stand_ins[path]): [name, path] for path in done if path in stand_ins}, parts


def _part_of(tensor: str, layers: set[str], front: set[str], positions: set[str]) -> str:
    """Which part of the model an initializer belongs to (the parts of `metrics.cost.bundle_parts`)."""
    base = tensor.removesuffix(".int8").removesuffix(".row_scale")
    if base in positions:
        return "positions"
    if base in front:
        return "front_end"
    if tensor.split(".")[0] == HEAD:
        return "head"
    if any(tensor.startswith(layer + ".") for layer in layers):
        return "quantized_linears"
    return "fp32_other"


def export_bundle(out: Path, checkpoint: Path | None = None, model_name: str | None = None,
                  options: ExportOptions = ExportOptions()) -> Path:
    """Write a bundle for a checkpoint (or an FP zoo model) at `out`; return its directory."""
    from edgeasr.atomic import atomic_dir
    from edgeasr.backends.hf import HFBackend, family_of
    from edgeasr.quant.checkpoint import read_meta

    model, processor_dir, recipe, label = _load(checkpoint, model_name)
    # what made the checkpoint, not this edgeasr's method: the resolver's cache skips a stale fit by it
    revision = read_meta(checkpoint).get("method_revision", 1) if checkpoint is not None else None
    family = family_of(model.config)
    if recipe is not None and recipe.a_bits < 8:
        log.warning("%s quantizes activations to %d bits: ONNX Runtime has no A%d kernel, so the bundle computes "
                    "with int8 activations (accuracy_level=4); its accuracy differs from the fake-quant model",
                    label, recipe.a_bits, recipe.a_bits)
    packed_by_id = _pack_layers(model)
    model_layers = {name: m for name, m in model.named_modules() if id(m) in packed_by_id}
    layers = _layer_report(model, packed_by_id)
    head_bits = options.head_bits if options.head_bits and options.head_bits < 16 else None
    head = pack_table(token_table(model), head_bits, options.head_group_size) if head_bits else None
    max_segment_seconds = HFBackend(model, None, None, label).max_segment_seconds
    front_end = recipe is not None and bool(options.front_end_bits) and options.front_end_bits < 16
    cost = _cost_records(model, head, front_end)
    fp32_bytes = 4 * sum(l["params"] for l in cost["layers"] if l["tied_to"] is None)
    swap_quantized_layers(model)
    specs = graph_specs(model, family)
    key = trace_key(model)
    shapes = shapes_of(model)
    with atomic_dir(out) as tmp:
        initializers: dict[str, int] = {}
        placed: dict[int, list[str]] = {}
        parts: dict[str, int] = {}
        for name, spec in specs.items():
            log.info("writing the %s graph", name)
            level = options.accuracy_level if name == "decoder" else options.clip_accuracy_level
            sizes, where, graph_parts = _write_graph(spec, name, key, tmp, packed_by_id, head, level, front_end)
            initializers.update(sizes)
            placed.update(where)
            for part, nbytes in graph_parts.items():
                parts[part] = parts.get(part, 0) + nbytes
        check_complete(packed_by_id, set(placed), _names_by_id(model_layers))
        for layer_name, m in model_layers.items():
            layers[layer_name]["graph"], layers[layer_name]["node"] = placed[id(m)]
        _write_tokenizer(processor_dir / "tokenizer.json", tmp / "tokenizer.json")
        features = _feature_settings(family, processor_dir, tmp)
        weight_bytes = sum(initializers.values())
        data = {
            "format": FORMAT, "label": label, "family": family, "recipe": recipe.to_dict() if recipe else None,
            "method_revision": revision,
            "graphs": {name: f"{name}.onnx" for name in specs}, "tokenizer": "tokenizer.json",
            "features": features, "shapes": asdict(shapes),
            "generation": model.generation_config.to_dict(), "config": _decode_config(model.config),
            "max_segment_seconds": max_segment_seconds,
            "weights": {"head_bits": head_bits or 16, "head_block_size": head.block_size if head else None,
                        "front_end_bits": options.front_end_bits if front_end else 32,
                        "accuracy_level": options.accuracy_level,
                        "clip_accuracy_level": options.clip_accuracy_level, "graph_version": VERSION, "layers": layers},
            "cost": cost,
            "sizes": {"weight_bytes": weight_bytes, "fp32_weight_bytes": fp32_bytes,
                      "head_bytes": head.nbytes if head else 4 * shapes.vocab * shapes.d_model,
                      "ratio_to_fp32": round(weight_bytes / fp32_bytes, 4), "parts": parts,
                      "effective_bits": model_effective_bits([LayerInfo(**l) for l in cost["layers"]])},
        }
        # The graph files hold the weights; the rest (tokenizer, mel filters, graph structure) is "files".
        # The card and bundle.json (metadata, tens of kB) are written after this count.
        content = sum(p.stat().st_size for p in tmp.iterdir() if p.is_file())
        data["sizes"]["parts"]["files"] = content - weight_bytes
        data["sizes"]["total_bytes_without_meta"] = content
        write_card(tmp / "README.md", data)
        data["sizes"]["file_bytes"] = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        data["files"], data["content_hash"] = files, content_hash(files)
        (tmp / META).write_text(json.dumps(data, separators=(",", ":"), default=str))
    if options.archive:
        write_archive(out)
    return out


def _front_end_bytes(layer) -> int | None:
    """Stored bytes of a conv or position table kept as int8 rows (None for other layers)."""
    if layer.kind == "conv1d":
        weights = layer.in_features // layer.groups * layer.out_features * layer.kernel
        return row_int8_bytes(layer.out_features, weights) + FP32_BYTES * (layer.params - weights)
    if layer.kind == "embedding" and "embed_positions" in layer.name:
        return row_int8_bytes(layer.in_features, layer.params)
    return None


def _cost_records(model, head: PackedWeight | None, front_end: bool) -> dict:
    """The cost model's layer records (metrics.layers), with the head as the bundle stores it."""
    from dataclasses import replace

    from edgeasr.backends.layers import describe_layers, model_dims

    layers = describe_layers(model)
    if head is not None:
        layers = [replace(l, w_bits=head.code_bits, weight_bytes=head.nbytes)
                  if l.name.endswith("decoder.embed_tokens") else l for l in layers]
    if front_end:  # int8 rows in storage; they are widened before the op, so the op's bits stay FP
        layers = [replace(l, weight_bytes=_front_end_bytes(l)) if _front_end_bytes(l) else l for l in layers]
    return {"layers": [l.to_dict() for l in layers], "dims": model_dims(model).to_dict()}


def _write_tokenizer(source: Path, target: Path) -> None:
    """The tokenizer without the JSON's indentation (a third of its 2 MB; the same content for `tokenizers`)."""
    data = json.loads(source.read_text(encoding="utf-8"))
    target.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")


def _feature_settings(family: str, processor_dir: Path, target: Path) -> dict:
    if family == "moonshine":
        return {"kind": "waveform", "sampling_rate": 16000}
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor.from_pretrained(processor_dir)
    np.save(target / "mel_filters.npy", np.asarray(extractor.mel_filters, dtype=np.float32))
    return {"kind": "log-mel", "sampling_rate": extractor.sampling_rate, "n_fft": extractor.n_fft,
            "hop_length": extractor.hop_length, "chunk_samples": extractor.n_samples,
            "n_mels": extractor.feature_size, "mel_filters": "mel_filters.npy"}


def _decode_config(config) -> dict:
    """The few model-config keys decoding reads (`DecodeSettings.from_configs`)."""
    keys = ("max_target_positions", "max_position_embeddings", "decoder_start_token_id", "eos_token_id")
    return {k: getattr(config, k) for k in keys if getattr(config, k, None) is not None}


def write_archive(directory: Path) -> Path:
    """DIR.edgeasr.tar next to DIR: uncompressed, since packed weights do not compress."""
    archive = directory.parent / f"{directory.name}{ARCHIVE_SUFFIX}"
    with tempfile.NamedTemporaryFile(dir=directory.parent, delete=False) as handle:
        with tarfile.open(fileobj=handle, mode="w") as tar:
            for path in sorted(directory.iterdir()):
                tar.add(path, arcname=path.name)
    Path(handle.name).rename(archive)
    return archive
