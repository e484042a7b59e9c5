"""One way from what a user names to a running Engine: the packed bundle whenever it can run the recipe.

Every front end (`edgeasr-listen`, the demo, the server, the stream / server / runtime benchmarks)
turns a zoo model, a recipe (model + method + bits, or a `.toml` file), a quantized checkpoint, a bundle
directory or a bundle archive into an `Engine` here, and nowhere else:

- **bundle** (ONNX Runtime, packed MatMulNBits weights, the engine a board runs) whenever a bundle can
  represent the recipe. A cached bundle is found by the recipe and export settings recorded in its
  `bundle.json`, not by its directory name; when there is none, the recipe is quantized (checkpoint
  cache) and exported once into the bundle cache, atomically, in a folder keyed by the checkpoint's hash
  and the export settings.
- **torch** (the transformers model, fake-quantized) only where no bundle can represent the recipe
  (activations below 8 bits, static activation scales: one warning says which) or when asked for.

Importing this module never imports torch: recipes, the bundle cache and the ONNX runtime are
torch-free, so a board with the edge profile resolves cached bundles; torch is imported only to quantize,
export or run the torch engine, and its absence there is a clear error with the workstation commands.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tarfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from edgeasr.engine import Engine
from edgeasr.errors import CheckpointError, EdgeASRError, QuantizationError
from edgeasr.metrics.bits import DEFAULT_HEAD_BITS, DEFAULT_HEAD_BLOCK, FRONT_END_BITS
from edgeasr.paths import cache_dir
from edgeasr.quant.methods import made_by_current_revision, method_revision
from edgeasr.quant.recipe import Recipe
from edgeasr.runtime.bundle import ARCHIVE_SUFFIX, META

log = logging.getLogger(__name__)

ENGINES = ("auto", "bundle", "torch")
"""auto: the bundle where one can represent the recipe, else torch; bundle / torch: only that engine."""
FP = "fp"
"""Method name front ends use for the unquantized model."""
FP32_FRONT_END = 32
"""`front_end_bits` of a bundle whose conv front end and position tables stay FP32."""
PROVENANCE = "resolver.json"
"""Written next to `bundle.json` by the resolver: what the bundle was exported from and how."""
CHECKPOINT_META = "quant.json"
"""A quantized checkpoint's metadata file (edgeasr.quant.checkpoint.META; that module imports torch)."""

Target = Union[str, Path, Recipe]
"""A zoo model name or transformers dir, a Recipe, a recipe .toml, a checkpoint, a bundle dir or archive."""
Progress = Callable[[float, str], object]
"""progress(fraction, message), e.g. a `gr.Progress`."""


class NotCachedError(EdgeASRError):
    """A recipe with neither a cached bundle nor a cached checkpoint where quantizing is not allowed."""


@dataclass(frozen=True)
class ResolveOptions:
    """Which engine to build for a target, and how bundles are exported on first use."""

    engine: str = "auto"
    """auto: the packed bundle whenever one can represent the recipe, else the torch model (logged);
    bundle: the bundle or an error; torch: the transformers (fake-quant) model."""
    threads: int | None = None
    """Intra-op threads of the engine (ONNX Runtime session; torch's process-wide count for torch); None = default."""
    head_bits: int = DEFAULT_HEAD_BITS
    """Bits of the tied token table / output head of bundles exported from a checkpoint (8 or 4; 16 = FP32).
    FP models are exported with an FP32 head. The same default as `ExportOptions` (from `metrics.bits`)."""
    head_group_size: int = DEFAULT_HEAD_BLOCK
    """Columns per scale of that head (`ExportOptions.head_group_size`)."""
    accuracy_level: int = 4
    """MatMulNBits compute of exported bundles' decoder step: 4 = int8 activations per block (`ExportOptions`)."""
    clip_accuracy_level: int = 1
    """MatMulNBits compute of exported bundles' encoder and cross-K/V graphs: 1 = fp32 (`ExportOptions`)."""
    quantize: bool = True
    """Quantize a recipe whose checkpoint is not cached; False refuses (a server's clients may not start one)."""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise EdgeASRError(f"engine must be one of {', '.join(ENGINES)}; got {self.engine!r}")


# -- naming what to run -------------------------------------------------------------------------------

def recipe_target(model: str, method: str | None = None, w_bits: int = 4, a_bits: int = 16,
                  group_size: int = 64) -> Target:
    """The target of picker / flag values: the model itself for no method (or "fp"), else its Recipe."""
    if method in (None, "", FP):
        return model
    return Recipe(model, method, int(w_bits), int(a_bits), int(group_size))


def parse_target(text: str) -> Target:
    """MODEL[:METHOD:W_BITS[:A_BITS[:GROUP_SIZE]]] (e.g. moonshine-tiny:rtn:4), or a path / zoo name as it is."""
    parts = text.split(":")
    if len(parts) == 1 or Path(text).expanduser().exists():
        return text
    if len(parts) == 2 and parts[1] == FP:
        return parts[0]
    if not 3 <= len(parts) <= 5 or not all(p.isdigit() for p in parts[2:]):
        raise EdgeASRError(f"a recipe is MODEL:METHOD:W_BITS[:A_BITS[:GROUP_SIZE]] (e.g. moonshine-tiny:rtn:4); "
                           f"got {text!r}")
    return recipe_target(parts[0], parts[1], *(int(p) for p in parts[2:]))


def _is_bundle(path: Path) -> bool:
    return (path / META).exists() or path.name.endswith(ARCHIVE_SUFFIX)


def _checkpoint_meta(path: Path) -> dict:
    directory = path.parent if path.suffix == ".safetensors" else path
    try:
        return json.loads((directory / CHECKPOINT_META).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{directory} is not a readable edgeasr checkpoint ({CHECKPOINT_META}: {exc})") from exc


@dataclass(frozen=True)
class _Request:
    """A target, classified: exactly one of bundle, recipe (with an optional checkpoint) or FP model."""

    bundle: Path | None = None
    recipe: Recipe | None = None
    checkpoint: Path | None = None
    model: str | None = None

    @property
    def label(self) -> str:
        if self.bundle is not None:
            return self.bundle.name
        return self.recipe.label if self.recipe is not None else f"{Path(self.model).name}-fp32"


def _classify(target: Target) -> _Request:
    if isinstance(target, Recipe):
        return _Request(recipe=target)
    path = Path(target).expanduser()
    if _is_bundle(path):
        if not path.exists():
            raise CheckpointError(f"no bundle archive at {path}")
        return _Request(bundle=path)
    if path.suffix == ".safetensors" or (path / CHECKPOINT_META).exists():
        return _Request(recipe=Recipe.from_dict(_checkpoint_meta(path)["recipe"]), checkpoint=path)
    if path.suffix == ".toml":
        return _Request(recipe=Recipe.from_toml(path))
    if not path.exists() and "/" not in str(target):
        from edgeasr.zoo.catalog import get_entry

        get_entry(str(target))  # an unknown name fails here, with the list of zoo names
    return _Request(model=str(target))


def bundle_limitation(recipe: Recipe | None) -> str | None:
    """Why no bundle can represent `recipe` (None: one can). MatMulNBits quantizes its input to int8 per
    block on the fly (finer than per-token A8), so A16 and dynamic A8 run as exported; nothing else does."""
    if recipe is None or recipe.a_bits >= 16:
        return None
    if recipe.a_bits < 8:
        return (f"A{recipe.a_bits}: ONNX Runtime has no A{recipe.a_bits} kernel (MatMulNBits computes with int8 "
                "activations), so a bundle would not compute this recipe")
    if not recipe.act_dynamic:
        return ("static A8 activation scales: MatMulNBits quantizes activations per block on the fly and cannot "
                "apply calibrated scales")
    return None


# -- the bundle cache -----------------------------------------------------------------------------------

def _export_settings(request: _Request, options: ResolveOptions) -> dict:
    head = 16 if request.recipe is None else options.head_bits
    # int8 conv / position tables for quantized recipes (ExportOptions); FP models keep an FP32 front end,
    # which bundle.json records as 32 (and bundles exported before the setting existed by leaving it out).
    front_end = FP32_FRONT_END if request.recipe is None else FRONT_END_BITS
    return {"head_bits": head, "head_block_size": None if head == 16 else options.head_group_size,
            "front_end_bits": front_end, "accuracy_level": options.accuracy_level,
            "clip_accuracy_level": options.clip_accuracy_level}


def _recorded(weights: dict, key: str):
    """An export setting as `bundle.json` records it."""
    return weights.get(key, FP32_FRONT_END if key == "front_end_bits" else None)


def _bundle_json(entry: Path) -> dict:
    """`bundle.json` of a bundle directory, or read from inside an archive without extracting it."""
    if entry.is_dir():
        return json.loads((entry / META).read_text())
    with tarfile.open(entry) as tar:
        for member in tar:
            if member.name == META:
                return json.load(tar.extractfile(member))
    raise CheckpointError(f"{entry} holds no {META}")


def _provenance(entry: Path) -> dict:
    path = entry / PROVENANCE
    return json.loads(path.read_text()) if entry.is_dir() and path.exists() else {}


def _same_target(data: dict, request: _Request) -> bool:
    recorded = data.get("recipe")
    if request.recipe is None:
        return recorded is None and data.get("label") == request.label
    if recorded is None:
        return False
    try:
        same = Recipe.from_dict(recorded) == request.recipe
    except (QuantizationError, TypeError):  # a recipe key this version does not know: not ours
        return False
    if same and not made_by_current_revision(request.recipe.method, data):
        log.info("cached bundle %s of %s was made by %s revision %s, this edgeasr's is %s: not used", data.get("label"),
                 request.label, request.recipe.method, data.get("method_revision", 1), method_revision(request.recipe.method))
        return False
    return same


def cached_bundles() -> list[tuple[Path, dict]]:
    """Every bundle in the cache (directories and archives) with its `bundle.json`; unreadable ones are skipped."""
    found = []
    for entry in sorted(cache_dir("bundles").iterdir()):
        if entry.name.startswith(".") or not ((entry / META).exists() or entry.name.endswith(ARCHIVE_SUFFIX)):
            continue
        try:
            found.append((entry, _bundle_json(entry)))
        except (OSError, json.JSONDecodeError, tarfile.TarError, CheckpointError) as exc:
            log.warning("skipping the unreadable cached bundle %s: %s", entry, exc)
    return found


def find_bundle(request: _Request, export: dict, source_sha: str | None) -> Path | None:
    """The cached bundle exported from this recipe (or FP model) with these settings.

    A bundle the resolver exported records the checkpoint it came from: one from another checkpoint of
    the same recipe (quantized again since) is stale and skipped. Bundles exported by hand (`edgeasr
    export`, an archive copied to a board) record only the recipe, which is all a board can check.
    """
    matches = []
    for entry, data in cached_bundles():
        weights = data.get("weights", {})
        if not _same_target(data, request) or any(_recorded(weights, k) != v for k, v in export.items()):
            continue
        made_from = _provenance(entry).get("source_sha256")
        if source_sha and made_from and made_from != source_sha:
            log.info("cached bundle %s was exported from another checkpoint of %s: not used", entry, request.label)
            continue
        # Prefer a bundle known to come from this checkpoint, then directories (no extraction), then the newest.
        matches.append(((source_sha is not None and made_from == source_sha), entry.is_dir(),
                        entry.stat().st_mtime, entry))
    return max(matches)[-1] if matches else None


def _source_sha(request: _Request, checkpoint: Path | None) -> str | None:
    """What the bundle's weights come from: the checkpoint's tensor hash, or the FP model's manifest hash."""
    if checkpoint is not None:
        return _checkpoint_meta(checkpoint)["sha256"]
    if request.model is not None:
        from edgeasr.atomic import MANIFEST
        from edgeasr.zoo import resolve_model_dir

        location, _ = resolve_model_dir(request.model)
        manifest = Path(str(location)) / MANIFEST
        if manifest.exists():
            return hashlib.sha256(manifest.read_bytes()).hexdigest()
    return None


def _cached_checkpoint(recipe: Recipe) -> Path | None:
    """The recipe's checkpoint in the cache, when there is one made from exactly this recipe."""
    path = cache_dir("checkpoints") / recipe.cache_name  # = edgeasr.quant.api.default_checkpoint_path (torch-free here)
    try:
        meta = _checkpoint_meta(path)
        return path if Recipe.from_dict(meta["recipe"]) == recipe and made_by_current_revision(recipe.method, meta) else None
    except (CheckpointError, QuantizationError, KeyError, TypeError):
        return None


def _torch_available() -> bool:
    try:
        return importlib.util.find_spec("torch") is not None
    except ImportError:
        return False


def _workstation_steps(request: _Request) -> str:
    label = request.label
    if request.recipe is None:
        return f"edgeasr export --model {request.model} --out {label} --archive"
    r = request.recipe
    source = (f"--checkpoint {request.checkpoint.name}" if request.checkpoint is not None else
              f"--checkpoint CACHE/checkpoints/{label}")
    quantize = ("" if request.checkpoint is not None else
                f"edgeasr quantize --model {r.model} --method {r.method} --w-bits {r.w_bits} --a-bits {r.a_bits} "
                f"--group-size {r.group_size} && ")
    return f"{quantize}edgeasr export {source} --out {label} --archive"


def _require_torch(request: _Request, why: str) -> None:
    if not _torch_available():
        raise EdgeASRError(
            f"{why}, and torch is not installed here (the edge profile runs bundles only). On a workstation with "
            f"`pip install edgeasr[quant]` (CACHE = its edgeasr cache) run:\n  {_workstation_steps(request)}\n"
            f"then copy {request.label}{ARCHIVE_SUFFIX} into {cache_dir('bundles')}/ on this machine.")


def _refuse_to_quantize(request: _Request, options: ResolveOptions) -> None:
    if not options.quantize:
        raise NotCachedError(f"{request.label} has neither a cached bundle nor a cached checkpoint here, and "
                             f"quantizing on request is off: quantize it first (edgeasr quantize ...)")


_build_locks: dict[str, threading.Lock] = {}
_table_lock = threading.Lock()


def _lock(name: str) -> threading.Lock:
    with _table_lock:
        return _build_locks.setdefault(name, threading.Lock())


def bundle_path(target: Target, options: ResolveOptions = ResolveOptions(),
                progress: Progress | None = None) -> Path:
    """The bundle of `target`: as given, found in the cache, or quantized and exported once into it."""
    request = _classify(target)
    if request.bundle is not None:
        return request.bundle
    limitation = bundle_limitation(request.recipe)
    if limitation:
        raise QuantizationError(f"no bundle can represent {request.label}: {limitation}; run it with --engine torch")
    export = _export_settings(request, options)
    # A recipe's bundle must come from its current checkpoint where there is one (a board has none);
    # an FP model's bundle is found by its label: the zoo's model directory may not exist on a board.
    checkpoint = request.checkpoint or (_cached_checkpoint(request.recipe) if request.recipe else None)
    source_sha = _source_sha(request, checkpoint) if checkpoint is not None else None
    found = find_bundle(request, export, source_sha)
    if found is not None:
        log.info("%s: cached bundle %s", request.label, found)
        return found
    _require_torch(request, f"no cached bundle of {request.label}")
    with _lock(request.label):  # two threads asking for the same new recipe export it once
        found = find_bundle(request, export, source_sha)
        if found is not None:
            return found
        if request.recipe is not None and checkpoint is None:
            _refuse_to_quantize(request, options)
            if progress is not None:
                progress(0.1, f"quantizing {request.label} (once; cached)")
            from edgeasr.quant.api import checkpoint_for

            checkpoint = checkpoint_for(request.recipe)
        if progress is not None:
            progress(0.4, f"exporting the {request.label} bundle (once; cached)")
        return _export(request, checkpoint, export)


def _export(request: _Request, checkpoint: Path | None, export: dict) -> Path:
    """Export into a staging folder, record the provenance, rename into place: a half-written bundle never
    looks whole, and two processes exporting the same key keep whichever finished first."""
    from edgeasr.export import ExportOptions, export_bundle

    source_sha = _source_sha(request, checkpoint)
    front_end = export["front_end_bits"]
    # The recipe is part of the key: two recipes can give the same weights (RTN ignores its calibration set).
    recipe = request.recipe.to_dict() if request.recipe is not None else None
    key = hashlib.sha256(json.dumps({"source_sha256": source_sha, "export": export, "recipe": recipe},
                                    sort_keys=True, default=str).encode())
    root = cache_dir("bundles")
    final = root / f"{request.label}-{key.hexdigest()[:12]}"
    if final.exists():
        raise CheckpointError(f"the cached bundle {final} is damaged (its {META} does not describe {request.label}); "
                              f"delete it (rm -r {final}) and run again to export it afresh")
    staging = root / f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
    log.info("exporting %s into the bundle cache (once)", request.label)
    try:
        export_bundle(staging, checkpoint=checkpoint, model_name=request.model if checkpoint is None else None,
                      options=ExportOptions(head_bits=export["head_bits"], accuracy_level=export["accuracy_level"],
                                            head_group_size=export["head_block_size"] or DEFAULT_HEAD_BLOCK,
                                            clip_accuracy_level=export["clip_accuracy_level"],
                                            front_end_bits=front_end if front_end < 16 else None))
        (staging / PROVENANCE).write_text(json.dumps({
            "source": str(checkpoint.name if checkpoint is not None else request.model),
            "source_sha256": source_sha, "export": export}, indent=1))
        try:
            staging.rename(final)
        except OSError:
            if not (final / META).exists():
                raise
            log.info("%s was exported by another process meanwhile: using its copy", final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


# -- engines --------------------------------------------------------------------------------------------

def _bundle_engine(path: Path, options: ResolveOptions) -> Engine:
    from edgeasr.runtime import OnnxBackend

    try:
        backend = OnnxBackend.load(path, threads=options.threads)
    except CheckpointError as exc:
        if cache_dir("bundles").resolve() in Path(path).resolve().parents:
            raise CheckpointError(f"{exc}. It is a cache entry: delete it (rm -r {path}) and run again to export it "
                                  "afresh") from exc
        raise
    return Engine(backend, backend.meta.label)


def _torch_engine(request: _Request, options: ResolveOptions, reason: str) -> Engine:
    _require_torch(request, f"{request.label} needs the torch engine ({reason})")
    import torch

    if options.threads:
        torch.set_num_threads(options.threads)
    if request.recipe is None:
        engine = Engine.load(request.model)
    else:
        from edgeasr.quant.api import checkpoint_for

        if request.checkpoint is None and _cached_checkpoint(request.recipe) is None:
            _refuse_to_quantize(request, options)
        engine = Engine.load(request.checkpoint or checkpoint_for(request.recipe))
    engine.why = reason
    return engine


def resolve(target: Target, options: ResolveOptions = ResolveOptions(), progress: Progress | None = None) -> Engine:
    """The Engine for `target`; `engine.describe()["engine"]` says which ran ("bundle" or "torch")."""
    request = _classify(target)
    if options.engine == "torch":
        if request.bundle is not None:
            raise EdgeASRError(f"{request.bundle} is a bundle: it runs on ONNX Runtime only; name its checkpoint, "
                               "recipe or model to run the torch engine")
        return _torch_engine(request, options, "asked for with engine=torch")
    limitation = bundle_limitation(request.recipe)
    if limitation:
        if options.engine == "bundle":
            raise QuantizationError(f"no bundle can represent {request.label}: {limitation}")
        log.warning("%s runs on the torch fake-quant model, not a bundle: %s", request.label, limitation)
        return _torch_engine(request, options, limitation)
    engine = _bundle_engine(bundle_path(target, options, progress), options)
    if progress is not None:
        progress(0.9, f"loaded the {engine.name} bundle")
    return engine
