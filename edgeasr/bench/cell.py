"""One sweep cell, run inside a Ray worker: quantize (or reuse the checkpoint), evaluate, return a row.

A cell never raises: whatever goes wrong is recorded in the row (`status` "refused" when a method
rejects the combination, "failed" otherwise) so the sweep goes on.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from edgeasr.bench.grid import Cell, GridError
from edgeasr.errors import QuantizationError
from edgeasr.quant.methods import method_revision


REFERENCE_UTTERANCE = (5.0, 20)
"""(audio seconds, decoder tokens) of the fixed utterance whose cost makes models comparable: the
per-utterance means depend on what each model decodes (a broken model that babbles costs more)."""


def _versions() -> dict:
    import torch
    import transformers

    import edgeasr

    return {"edgeasr": edgeasr.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def checkpoint_path(cell: Cell) -> Path:
    """The cache folder of this recipe's checkpoint; the hash keeps recipes that share a label apart."""
    from edgeasr.paths import cache_dir

    digest = hashlib.sha256(json.dumps(cell.recipe.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    return cache_dir("checkpoints") / f"{cell.recipe.label}-{digest}"


def measured_checkpoint(row: dict, cell: Cell) -> Path | None:
    """The cached checkpoint a sweep row of `cell` measured, or None when it is gone, another recipe's (a key of an
    older `Recipe`), or made by a superseded revision of the method (rescoring scripts decode rows again from it)."""
    from edgeasr.quant.checkpoint import read_meta
    from edgeasr.quant.methods import made_by_current_revision

    path = checkpoint_path(cell)
    if (row["key"] not in cell.keys or not made_by_current_revision(row["method"], row) or not path.exists()
            or not made_by_current_revision(row["method"], read_meta(path))):
        return None
    return path


def load_engine(cell: Cell):
    """The Engine for the cell's recipe and the quantization stats (cached checkpoints keep their stats)."""
    from edgeasr.engine import Engine
    from edgeasr.quant.api import ensure_checkpoint
    from edgeasr.quant.checkpoint import read_meta
    from edgeasr.quant.methods import available_methods

    if cell.is_fp:
        return Engine.load(cell.recipe.model), {"quantize_seconds": 0.0, "checkpoint_cached": None}
    if cell.recipe.method not in available_methods():  # a typo in the grid is a failure, not a refusal
        raise GridError(f"unknown method {cell.recipe.method!r}; registered: {', '.join(available_methods())}")
    path = checkpoint_path(cell)
    cached = ensure_checkpoint(cell.recipe, path)
    stats = read_meta(path).get("stats", {})
    return Engine.load(path), {**stats, "checkpoint_cached": cached}


def subset_manifest(cell: Cell) -> str | Path:
    """The cell's evaluation manifest: the set itself, or `limit` labelled utterances evenly spaced over it."""
    from edgeasr.data.manifest import load_manifest, write_manifest
    from edgeasr.paths import cache_dir

    if not cell.limit or not cell.spread:
        return cell.dataset
    utterances = [u for u in load_manifest(cell.dataset) if u.text]
    if cell.limit >= len(utterances):
        return cell.dataset
    step = len(utterances) / cell.limit
    chosen = [utterances[int(i * step)] for i in range(cell.limit)]
    target = cache_dir("sweeps") / f"{Path(cell.dataset).stem}-spread{cell.limit}.jsonl"
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    write_manifest(tmp, chosen)
    tmp.replace(target)  # atomic: cells running in parallel may write the same subset
    return target


def _cost_fields(report, engine) -> dict:
    """Per-utterance means over the set, and the cost of the fixed reference utterance."""
    costs = [r for r in report.rows if "bops" in r]
    mean = lambda key: round(sum(r[key] for r in costs) / len(costs)) if costs else None
    ref = engine.estimate_cost(*REFERENCE_UTTERANCE)
    return {"memory_io_bytes": mean("memory_io_bytes"), "bops": mean("bops"),
            "ref_macs": ref.macs, "ref_bops": ref.bops, "ref_memory_io_bytes": ref.memory_io_bytes,
            "ref_weight_read_bytes": ref.weight_read_bytes, "ref_activation_bytes": ref.activation_bytes,
            "weight_bytes": ref.weight_bytes, "fp32_weight_bytes": ref.fp32_weight_bytes,
            "size_ratio": round(ref.size_ratio, 3), "on_disk_bytes": ref.size.on_disk_bytes,
            "effective_bits": ref.effective_bits, "total_bytes": ref.total_bytes, "total_parts": ref.size.total_parts}


def scrub(text: str) -> str:
    """Replace this machine's cache, working and home folders in a message: results are shared files."""
    from edgeasr.paths import cache_root

    for folder, name in ((cache_root(), "$EDGEASR_CACHE"), (Path.cwd(), "<cwd>"), (Path.home(), "~")):
        text = text.replace(str(folder), name)
    return text


def base_row(cell: Cell) -> dict:
    from edgeasr.audio import SEGMENTATION_REVISION
    from edgeasr.bench.breakdown import EARLY_END_DETECTOR

    recipe = cell.recipe
    return {"key": cell.key, "cell": cell.label, "model": recipe.model, "method": recipe.method,
            "bits": cell.bits_label, "w_bits": recipe.w_bits, "a_bits": recipe.a_bits,
            "group_size": recipe.group_size, "dataset": cell.dataset, "limit": cell.limit, "spread": cell.spread,
            "seed": recipe.calibration.seed, "calibration": None if cell.is_fp else asdict(recipe.calibration),
            "options": recipe.options, "method_revision": None if cell.is_fp else method_revision(recipe.method),
            "segmentation": SEGMENTATION_REVISION, "early_end_detector": EARLY_END_DETECTOR}


def run_cell(cell: Cell, threads: int = 1) -> dict:
    """Quantize and evaluate one cell; the row carries the result or the error."""
    import torch

    from edgeasr.bench.breakdown import breakdown
    from edgeasr.evaluate import evaluate

    torch.set_num_threads(threads)
    start = time.perf_counter()
    row = base_row(cell)
    try:
        engine, stats = load_engine(cell)
        report = evaluate(engine, subset_manifest(cell), limit=None if cell.spread else cell.limit or None,
                          progress=False)
        wer = report.wer
        row.update({"status": "ok", "wer": round(100 * wer.wer, 3), "substitutions": wer.substitutions,
                    "insertions": wer.insertions, "deletions": wer.deletions, "reference_words": wer.reference_words,
                    "utterances": wer.utterances, "audio_seconds": round(report.audio_seconds, 2),
                    "compute_seconds": round(report.compute_seconds, 2), "rtfx": round(report.rtfx, 2),
                    **_cost_fields(report, engine), **breakdown(report.rows),
                    "quantize_seconds": stats.get("quantize_seconds"),
                    "calibration_clips": stats.get("calibration_clips"),
                    "checkpoint_cached": stats.get("checkpoint_cached")})
    except QuantizationError as exc:
        row.update({"status": "refused", "error": scrub(str(exc))})
    except Exception as exc:  # a cell's failure is data for the sweep, never its end
        row.update({"status": "failed", "error": scrub(f"{type(exc).__name__}: {exc}"),
                    "traceback": scrub(traceback.format_exc(limit=6)[-2000:])})
    row.update({"threads": threads, "cell_seconds": round(time.perf_counter() - start, 1), "versions": _versions()})
    return row
