"""Sweep results → the study's tables (markdown) and plots (PNG).

Tables follow the study's layout: one block per model and set, rows are methods, columns bit settings;
WER first (each cell with its effective bits per weight), then effective bits, total bytes (what the
bundle holds), memory I/O and BOPs of the fixed reference utterance as companion tables. Rows written
before the cells recorded their storage get it from their recipes (`bench.sizes`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgeasr.bench.cell import REFERENCE_UTTERANCE
from edgeasr.bench.sweep import read_rows
from edgeasr.errors import EdgeASRError

BITS_ORDER = ("w8a16", "w6a16", "w5a16", "w4a16", "w3a16", "w2a16", "w8a8", "w4a8", "w8a6", "w4a6", "w8a4", "w4a4")


@dataclass
class ReportFiles:
    """What `write_report` wrote."""

    markdown: Path
    """The tables."""
    plots: list[Path]
    """The PNG files."""


def cell_identity(row: dict) -> str:
    """What makes two rows the same cell, from fields every row records. Not the row's `key`: that hashes the
    whole recipe, so it changes whenever the recipe gains a field (e.g. an empty `layer_bits`), and a re-run
    cell would then stand next to its old row instead of replacing it."""
    return json.dumps([row["cell"], row.get("limit"), row.get("spread"), row.get("calibration"), row.get("options")],
                      sort_keys=True)


def latest_rows(rows: list[dict]) -> list[dict]:
    """One row per cell: the last one written (a retried or re-run cell supersedes the earlier row)."""
    by_cell: dict[str, dict] = {}
    for row in rows:
        by_cell.pop(cell_identity(row), None)  # a re-run cell moves to where it was last written
        by_cell[cell_identity(row)] = row
    return list(by_cell.values())


def study_rows(results: Path) -> list[dict]:
    """The latest row of every cell, with effective bits and total bytes (from the recipe where missing)."""
    from edgeasr.bench.sizes import fill_sizes
    from edgeasr.paths import cache_dir

    return fill_sizes(latest_rows(read_rows(results)), cache_dir("sweeps") / "layer-records.json")


def _bits_columns(rows: list[dict]) -> list[str]:
    present = {r["bits"] for r in rows if r["bits"] != "fp"}
    rank = {b: i for i, b in enumerate(BITS_ORDER)}
    return sorted(present, key=lambda b: (rank.get(b, len(rank)), b))


def _methods(rows: list[dict]) -> list[str]:
    seen = []
    for row in rows:
        if row["method"] != "fp" and row["method"] not in seen:
            seen.append(row["method"])
    return seen


def _cell_text(row: dict | None, value: Callable[[dict], str]) -> str:
    if row is None:
        return ""
    if row.get("status") == "refused":
        return "refused"
    if row.get("status") != "ok":
        return "failed"
    return value(row)


def _table(rows: list[dict], title: str, value: Callable[[dict], str]) -> list[str]:
    columns = _bits_columns(rows)
    index = {(r["method"], r["bits"]): r for r in rows}
    lines = [f"**{title}**", "", "| method | " + " | ".join(c.upper() for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for method in _methods(rows):
        cells = [_cell_text(index.get((method, c)), value) for c in columns]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines + [""]


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def _bits(row: dict) -> str:
    """Effective bits, marked ≈ when derived from the recipe (some extras not counted)."""
    bits = row.get("effective_bits")
    if bits is None:
        return "16" if row["method"] == "fp" else "?"
    return f"{'≈' if row.get('sizes_from') == 'recipe' and row.get('sizes_note') else ''}{bits:.2f}"


def model_section(model: str, dataset: str, rows: list[dict]) -> list[str]:
    """The tables of one model on one set."""
    fp = next((r for r in rows if r["method"] == "fp" and r.get("status") == "ok"), None)
    ok = [r for r in rows if r.get("status") == "ok"]
    lines = [f"### {model} on {dataset}", ""]
    if ok:
        sample = ok[0]
        lines.append(f"{sample['utterances']} utterances, {sample['reference_words']} reference words.")
    if fp:
        lines.append(f"FP baseline: WER {fp['wer']:.2f} %, weights {_mb(fp['weight_bytes'])} MB (fp16), "
                     f"FP32 bundle {_mb(fp['total_bytes'])} MB, "
                     f"memory I/O {_mb(fp['ref_memory_io_bytes'])} MB, {fp['ref_bops'] / 1e9:.0f} GBOP, "
                     f"RTFx {fp['rtfx']:.1f}.")
    notes = sorted({r["sizes_note"] for r in ok if r.get("sizes_note")})
    if notes:
        lines.append("≈: storage from the recipe, for cells run before they recorded it: " + "; ".join(notes) + ".")
    lines.append("")
    lines += _table(rows, "WER (%) [effective bits per weight]", lambda r: f"{r['wer']:.2f} [{_bits(r)}]")
    lines += matched_bytes_table(rows, "w3a16")
    lines += _table(rows, "Effective bits per weight (quantized layers: codes, scales, zeros, outliers)", _bits)
    lines += _table(rows, "Total MB (what the bundle holds, default export: 4-bit head, int8 front end)",
                    lambda r: _mb(r["total_bytes"]))
    lines += _table(rows, "Memory I/O (MB per reference utterance)", lambda r: _mb(r["ref_memory_io_bytes"]))
    lines += _table(rows, "BOPs (G per reference utterance)", lambda r: f"{r['ref_bops'] / 1e9:.0f}")
    lines += _table(rows, "Weights (MB stored)", lambda r: _mb(r["weight_bytes"]))
    return lines


def matched_bytes_table(rows: list[dict], bits: str, baseline: str = "rtn") -> list[str]:
    """The cells of one bit setting ranked by WER, each with its effective bits, total bytes and the byte
    difference to the baseline method's cell, so methods are compared at what they store, not at the label."""
    cells = sorted((r for r in rows if r["bits"] == bits and r.get("status") == "ok" and r.get("total_bytes")),
                   key=lambda r: (r["wer"], r["total_bytes"]))
    base = next((r for r in cells if r["method"] == baseline), None)
    if not cells:
        return []
    lines = [f"**{bits.upper()} at matched bytes** (ranked by WER; Δ: total bytes against {baseline.upper()} {bits.upper()})",
             "", "| method | WER % | effective bits | total MB | Δ MB | Δ % |", "|---|---:|---:|---:|---:|---:|"]
    for r in cells:
        delta = "" if base is None else f"{(r['total_bytes'] - base['total_bytes']) / 1e6:+.2f}"
        pct = "" if base is None else f"{100 * (r['total_bytes'] / base['total_bytes'] - 1):+.1f}"
        lines.append(f"| {r['method']} | {r['wer']:.2f} | {_bits(r)} | {_mb(r['total_bytes'])} | {delta} | {pct} |")
    return lines + [""]


def markdown(rows: list[dict]) -> str:
    seconds, tokens = REFERENCE_UTTERANCE
    lines = ["# Quantization sweep", "",
             f"WER: Whisper English normalizer, corpus level. Memory I/O and BOPs are for a reference utterance "
             f"of {seconds:g} s decoded into {tokens} tokens (the same for every cell, so a model that babbles "
             "is not charged for it): BOPs = Σ MACs × b_w × b_a with unquantized operands at 16 bits; memory "
             "I/O = weights at their stored width (scales, zeros, outliers included; encoder once, decoder per "
             "token) + activations read and written by the matmuls and convolutions. Effective bits per weight: "
             "everything a method keeps for its quantized layers (codes at the grid width, fp16 scales, zero "
             "points, outliers, second-level statistics) over their weights; total MB: the weights an exported "
             "bundle of the cell holds with the default export options (tokenizer and metadata files, the same "
             "for every cell of a model, not included). Compare methods at matched bytes, not at the nominal "
             "bit setting. \"refused\": the method does not apply to that setting.", ""]
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["dataset"]), []).append(row)
    for (model, dataset), group in groups.items():
        lines += model_section(model, dataset, group)
    failed = [r for r in rows if r.get("status") == "failed"]
    if failed:
        lines += ["### Failed cells", ""] + [f"- {r['cell']}: {r.get('error', '')[:300]}" for r in failed] + [""]
    return "\n".join(lines)


STUDY_START = "<!-- edgeasr report {dataset}: regenerated by `edgeasr report RESULTS --study docs/study.md` -->"
STUDY_END = "<!-- /edgeasr report -->"


def update_study_page(page: Path, results: Path, dataset: str = "asterisk-en") -> None:
    """Replace the marked block of `page` (docs/study.md) with every model's tables on `dataset`, one folded
    section each."""
    rows = study_rows(results)
    start, text = STUDY_START.format(dataset=dataset), page.read_text()
    if start not in text or STUDY_END not in text.split(start, 1)[1]:
        raise EdgeASRError(f"{page} has no block to update: add the lines\n{start}\n{STUDY_END}")
    models = list(dict.fromkeys(r["model"] for r in rows if r["dataset"] == dataset))
    block = [start]
    for model in models:
        section = model_section(model, dataset, [r for r in rows if r["model"] == model and r["dataset"] == dataset])
        block += ["<details>", f"<summary>{model}: WER, memory I/O, BOPs and weights on {dataset}</summary>", "",
                  *section[1:], "</details>", ""]
    before, after = text.split(start, 1)
    page.write_text(before + "\n".join(block) + after[after.index(STUDY_END):])


def write_report(results: Path, out_dir: Path) -> ReportFiles:
    """Write `report.md` and the plots for `results` into `out_dir`."""
    from edgeasr.bench.plots import write_plots

    rows = study_rows(results)
    if not rows:
        raise EdgeASRError(f"{results} has no result rows: run `edgeasr sweep` first")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.md"
    path.write_text(markdown(rows))
    return ReportFiles(path, write_plots(rows, out_dir))
