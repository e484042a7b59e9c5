"""Entry points: quantize a model under a recipe, save it, or find the cached checkpoint."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from edgeasr.errors import CheckpointError, QuantizationError
from edgeasr.paths import cache_dir
from edgeasr.quant.methods import made_by_current_revision
from edgeasr.quant.recipe import Recipe

log = logging.getLogger(__name__)


def quantize(recipe: Recipe):
    """Load the FP model of `recipe`, run its method, return (backend with the quantized model, stats)."""
    from edgeasr.backends.hf import HFBackend
    from edgeasr.quant.job import QuantJob
    from edgeasr.quant.methods import get_method
    from edgeasr.zoo import resolve_model_dir

    recipe.validate()
    method = get_method(recipe.method)
    options = method.make_options(recipe.options)
    if method.needs_activation_quant and not recipe.a_spec.enabled:
        raise QuantizationError(f"{recipe.method} smooths activations for activation quantization; with a_bits=16 it "
                                f"has nothing to do. Use --a-bits 8 (or 4), or a weight-only method (rtn, gptq, awq, ...)")
    location, _ = resolve_model_dir(recipe.model)
    backend = HFBackend.from_pretrained(location, recipe.model)
    job = QuantJob(backend, recipe)
    start = time.perf_counter()
    method.run(job, options)
    seconds = time.perf_counter() - start
    if recipe.layer_bits or recipe.group_size_at:  # a method that ignores per-layer grids must fail here, not at load
        from edgeasr.quant.layers import QuantLinear

        wrong = [n for n, m in backend.model.named_modules() if isinstance(m, QuantLinear)
                 and (m.w_spec.bits, m.w_spec.group_size) != ((want := recipe.w_spec_for(n)).bits, want.group_size)]
        if wrong:
            raise QuantizationError(f"{recipe.method} does not honour per-layer bits (layer_bits, group_size_at): {len(wrong)} "
                                    f"layers, e.g. {wrong[0]}, are not at their bits and group size; use rtn, gptq or awq")
    log.info("%s took %.1f s", recipe.label, seconds)
    stats = {"quantize_seconds": round(seconds, 2),
             "calibration_clips": job.calibration_stats().get("calibration_sequences", 0)}
    return backend, stats, location


def default_checkpoint_path(recipe: Recipe) -> Path:
    return cache_dir("checkpoints") / recipe.cache_name


def quantize_to_checkpoint(recipe: Recipe, target: Path | None = None) -> Path:
    from edgeasr.quant.checkpoint import save_checkpoint

    backend, stats, location = quantize(recipe)
    source_dir = Path(location) if Path(str(location)).is_dir() else None
    if source_dir is None:
        raise QuantizationError(f"checkpoints need a local source directory; {recipe.model} resolved to {location}")
    return save_checkpoint(backend.model, recipe, source_dir, target or default_checkpoint_path(recipe), stats)


def checkpoint_for(recipe: Recipe) -> Path:
    """The cached checkpoint of `recipe`, quantizing it first if it is missing or does not verify."""
    path = default_checkpoint_path(recipe)
    ensure_checkpoint(recipe, path)
    return path


def ensure_checkpoint(recipe: Recipe, path: Path) -> bool:
    """Quantize `recipe` into `path` unless a checkpoint of the same recipe, made by this edgeasr's revision of the
    method, is there already; True when that cached one is used."""
    from edgeasr.quant.checkpoint import read_meta

    if path.exists():
        try:
            meta = read_meta(path)
            if Recipe.from_dict(meta["recipe"]) == recipe:
                if made_by_current_revision(recipe.method, meta):
                    return True
                log.warning("%s was made by another revision of %s; quantizing again", path, recipe.method)
        except CheckpointError as exc:
            log.warning("%s; quantizing again", exc)
    log.info("no cached checkpoint for %s: quantizing (once)", recipe.label)
    quantize_to_checkpoint(recipe, path)
    return False


def load_or_quantize(model: str, method: str = "rtn", w_bits: int = 4, a_bits: int = 16,
                     group_size: int = 64, **options) -> Path:
    """`checkpoint_for` the recipe of these values."""
    return checkpoint_for(Recipe(model, method, w_bits, a_bits, group_size, options=options))
