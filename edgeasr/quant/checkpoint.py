"""Quantized checkpoints: integer codes, scales, zeros and extras in safetensors, plus the recipe.

A checkpoint is a directory: `model.safetensors`, `quant.json` (format, recipe, source, per-layer layout
with its effective bits by part, sha256 of the tensors, versions) and the source model's config, tokenizer and feature-extractor files,
so it loads on its own. Loading verifies the hash and that the layers match the recipe, and never
recalibrates.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import torch
from torch import nn

from edgeasr.atomic import atomic_dir, sha256_file
from edgeasr.errors import CheckpointError
from edgeasr.quant.checkpoint_files import FORMAT, META, WEIGHTS
from edgeasr.quant.job import replace_module
from edgeasr.quant.layers import QuantLinear
from edgeasr.quant.methods import method_revision
from edgeasr.quant.recipe import Recipe
from edgeasr.quant.spec import QuantSpec


def _layer_layout(layer: QuantLinear) -> dict:
    return {"in": layer.in_features, "out": layer.out_features,
            "w_spec": dataclasses.asdict(layer.w_spec), "a_spec": dataclasses.asdict(layer.a_spec),
            "bias": layer.bias is not None,
            "n_outliers": 0 if layer.outlier_idx is None else layer.outlier_idx.numel(),
            "n_sparse": 0 if layer.sparse_val is None else layer.sparse_val.numel(),
            "in_scale": layer.in_scale is not None, "in_shift": layer.in_shift is not None,
            "hadamard": layer.hadamard, "static_act": layer.act_scale is not None,
            "stat_bits": layer.stat_bits, "stat_group": layer.stat_group, "zero_stats": layer.zero_codes is not None,
            "float_zero": layer.float_zero,
            "bits": layer.storage_bits().to_dict()}


def save_checkpoint(model: nn.Module, recipe: Recipe, source_dir: Path, target: Path, stats: dict | None = None) -> Path:
    """Write `model` (with QuantLinear layers) as a checkpoint directory at `target`, atomically."""
    from safetensors.torch import save_model
    import transformers

    layers = {n: _layer_layout(m) for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    if not layers:
        raise CheckpointError("the model has no quantized layers: nothing to save as a quantized checkpoint")
    with atomic_dir(target) as tmp:
        save_model(model, str(tmp / WEIGHTS))
        for f in Path(source_dir).iterdir():
            if f.is_file() and f.suffix in (".json", ".txt", ".model") and f.name not in ("MANIFEST.json", META):
                shutil.copy(f, tmp / f.name)
        meta = {"format": FORMAT, "recipe": recipe.to_dict(), "label": recipe.label,
                "method_revision": method_revision(recipe.method), "layers": layers,
                "sha256": sha256_file(tmp / WEIGHTS), "stats": stats or {},
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}
        (tmp / META).write_text(json.dumps(meta, indent=1))
    return target


def read_meta(path: Path) -> dict:
    path = Path(path)
    if path.suffix == ".safetensors":
        path = path.parent
    meta_path = path / META
    if not meta_path.exists():
        raise CheckpointError(f"{path} is not an edgeasr checkpoint (no {META})")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{meta_path} is corrupted: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} has format {meta.get('format')!r}; this edgeasr reads {FORMAT}")
    return meta


def _check_layers(meta: dict, recipe: Recipe) -> None:
    for name, layout in meta["layers"].items():
        spec = recipe.w_spec_for(name)  # per-layer bits (and group size) of a mixed recipe
        w_bits = spec.bits
        if (layout["w_spec"]["bits"] != w_bits or layout["a_spec"]["bits"] != recipe.a_bits
                or (recipe.group_size_at and layout["w_spec"]["group_size"] != spec.group_size)):
            raise CheckpointError(f"layer {name} is w{layout['w_spec']['bits']}a{layout['a_spec']['bits']} but the "
                                  f"recipe says w{w_bits}a{recipe.a_bits} group {spec.group_size}: the checkpoint does not match "
                                  "its recipe")


def load_checkpoint(path: Path, expected: Recipe | None = None) -> tuple[nn.Module, Path, Recipe]:
    """Rebuild the quantized model; refuse a checkpoint whose hash or recipe does not match."""
    from safetensors.torch import load_model
    from transformers import AutoConfig

    path = Path(path)
    directory = path.parent if path.suffix == ".safetensors" else path
    meta = read_meta(directory)
    recipe = Recipe.from_dict(meta["recipe"])
    if expected is not None and expected != recipe:
        raise CheckpointError(f"{directory} was made from recipe {recipe.label}, not the requested {expected.label}")
    _check_layers(meta, recipe)
    weights = directory / WEIGHTS
    if not weights.exists() or sha256_file(weights) != meta["sha256"]:
        raise CheckpointError(f"{weights} does not match the hash in {META}: the checkpoint is corrupted or was "
                              "modified; quantize again (edgeasr quantize ...)")
    config = AutoConfig.from_pretrained(directory)
    if config.model_type == "whisper":
        from transformers import WhisperForConditionalGeneration as model_cls
    else:
        from transformers import MoonshineForConditionalGeneration as model_cls
    config._attn_implementation = "sdpa"
    model = model_cls(config)  # built on the CPU (not meta) so non-persistent buffers such as rotary tables exist
    for name, layout in meta["layers"].items():
        layer = QuantLinear(layout["in"], layout["out"], QuantSpec(**layout["w_spec"]), QuantSpec(**layout["a_spec"]),
                            layout["bias"], layout["n_outliers"], layout["n_sparse"], layout["in_scale"],
                            layout["in_shift"], layout["hadamard"], layout["static_act"],
                            layout.get("stat_bits", 0), layout.get("stat_group", 16), layout.get("zero_stats", False),
                            layout.get("float_zero", False))
        replace_module(model, name, layer)
    try:
        missing, unexpected = load_model(model, str(weights), strict=False)
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise CheckpointError(f"cannot read {weights}: {exc}") from exc
    missing = [k for k in missing if not _is_tied(model, k)]
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig.from_pretrained(directory)
    return model.eval(), directory, recipe


def _is_tied(model: nn.Module, key: str) -> bool:
    return key in getattr(model, "_tied_weights_keys", {}) or key == "proj_out.weight"

