"""Quantization benchmark: WER of every method at W8A16, W4A16, W3A16, W4A8 and W8A8, with calibration time.

The cells are the study sweep's (`edgeasr sweep`, resumable, checkpoints cached), so this runs the sweep
grid first (skipping cells already in the results file) and then writes `quant.csv` (one row per model,
method, bit setting and set) and `quant.md` (one table per model, checked against the targets: W8 within
+0.2 WER of FP, best W4 within +0.5, and which methods keep W3 usable).
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path

BITS = ("w8a16", "w4a16", "w3a16", "w4a8", "w8a8")
CSV_FIELDS = ("model", "method", "bits", "dataset", "status", "wer", "reference_words", "utterances",
              "quantize_seconds", "effective_bits", "total_bytes", "sizes_from", "weight_bytes",
              "ref_memory_io_bytes", "ref_bops", "rtfx", "error")
USABLE_W3_MARGIN = 2.0
"""W3 counts as usable when its WER is within this many points of FP (absolute)."""


@dataclass(frozen=True)
class Targets:
    """The issue's targets, in WER points above FP on the primary set."""

    w8: float = 0.2
    best_w4: float = 0.5


def _index(rows: list[dict]) -> dict[tuple[str, str, str, str], dict]:
    return {(r["model"], r["method"], r["bits"], r["dataset"]): r for r in rows}


def _ok_wer(row: dict | None) -> float | None:
    return row["wer"] if row and row.get("status") == "ok" else None


def _cell(row: dict | None) -> str:
    if row is None:
        return ""
    if row.get("status") != "ok":
        return row.get("status", "failed")
    return f"{row['wer']:.2f}"


def _seconds(row: dict | None) -> str:
    seconds = row.get("quantize_seconds") if row and row.get("status") == "ok" else None
    return "" if seconds is None else f"{seconds:.0f}"


def model_table(model: str, sets: list[str], rows: list[dict]) -> list[str]:
    """One model: methods × bit settings, each cell `WER set1 / WER set2 (calibration s)`."""
    index = _index(rows)
    methods = [m for m in dict.fromkeys(r["method"] for r in rows if r["model"] == model) if m != "fp"]
    fp = [_ok_wer(index.get((model, "fp", "fp", s))) for s in sets]
    lines = [f"### {model}", "",
             "FP: " + " / ".join("—" if w is None else f"{w:.2f}" for w in fp) + f" ({' / '.join(sets)})", "",
             "| method | " + " | ".join(b.upper() for b in BITS) + " |", "|---|" + "---:|" * len(BITS)]
    for method in methods:
        cells = []
        for bits in BITS:
            found = [index.get((model, method, bits, s)) for s in sets]
            if all(f is None for f in found):
                cells.append("")
                continue
            text = " / ".join(_cell(f) for f in found)
            seconds = next((_seconds(f) for f in found if _seconds(f)), "")
            cells.append(f"{text} ({seconds} s)" if seconds else text)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines + [""] + target_lines(model, sets[0], rows) + [""]


def target_lines(model: str, dataset: str, rows: list[dict], targets: Targets = Targets()) -> list[str]:
    """The targets, checked on `dataset` against what was measured (nothing is claimed for missing cells)."""
    mine = [r for r in rows if r["model"] == model and r["dataset"] == dataset and r.get("status") == "ok"]
    fp = next((r["wer"] for r in mine if r["method"] == "fp"), None)
    if fp is None:
        return ["(no FP baseline yet: targets not checked)"]
    def at(bits: str) -> dict[str, float]:
        return {r["method"]: r["wer"] for r in mine if r["bits"] == bits}

    def storage(bits: str, method: str) -> str:
        """Effective bits and the bytes against RTN at the same setting: the methods are not at equal bytes."""
        by = {r["method"]: r for r in mine if r["bits"] == bits}
        row, rtn = by[method], by.get("rtn")
        if row.get("effective_bits") is None:
            return ""
        diff = ("" if rtn is None or method == "rtn" or not rtn.get("total_bytes")
                else f", {(row['total_bytes'] - rtn['total_bytes']) / 1e6:+.2f} MB vs rtn")
        approx = "≈" if row.get("sizes_note") else ""  # from the recipe: some extras not counted
        return f" [{approx}{row['effective_bits']:.2f} b{diff}]"
    lines = []
    w8 = at("w8a16")
    if w8:
        worst = max(w8, key=w8.get)
        verdict = "met" if w8[worst] - fp <= targets.w8 else "missed"
        lines.append(f"- W8A16 within +{targets.w8} of FP: {verdict} (worst: {worst} {w8[worst] - fp:+.2f}, "
                     f"{len(w8)} methods)")
    w4 = at("w4a16")
    if w4:
        best = min(w4, key=w4.get)
        verdict = "met" if w4[best] - fp <= targets.best_w4 else "missed"
        lines.append(f"- best W4A16 within +{targets.best_w4} of FP: {verdict} ({best} {w4[best] - fp:+.2f}"
                     f"{storage('w4a16', best)})")
    w3 = at("w3a16")
    if w3:
        usable = sorted((m for m, w in w3.items() if w - fp <= USABLE_W3_MARGIN), key=w3.get)
        lines.append(f"- W3A16 within +{USABLE_W3_MARGIN:g} of FP: "
                     f"{', '.join(m + storage('w3a16', m) for m in usable) or 'none'} (of {len(w3)} methods)")
    return lines


def write_tables(rows: list[dict], out_dir: Path) -> tuple[Path, Path]:
    """quant.csv and quant.md for the benchmark's bit settings (plus the FP rows)."""
    chosen = [r for r in rows if r["bits"] in BITS or r["method"] == "fp"]
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "quant.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(sorted(chosen, key=lambda r: (r["model"], r["method"], r["bits"], r["dataset"])))
    sets = list(dict.fromkeys(r["dataset"] for r in chosen))
    models = list(dict.fromkeys(r["model"] for r in chosen))
    lines = ["# Quantization benchmark", "",
             f"WER (%) on {' / '.join(sets)} (Whisper English normalizer, corpus level), calibration seconds "
             "in brackets (wall time of `edgeasr quantize` in the sweep cell, 1 thread). \"refused\": the "
             "method does not apply to that setting. Rows come from the sweep results; empty cells were not "
             "run yet. In the target lines, [b] is the method's effective bits per weight and the MB its bundle's "
             "total bytes against RTN at the same setting: a method that keeps more (small groups, outliers) is "
             "not at equal bytes.", ""]
    for model in models:
        lines += model_table(model, sets, chosen)
    md_path = out_dir / "quant.md"
    md_path.write_text("\n".join(lines))
    return csv_path, md_path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grid", type=Path, default=Path("bench/grids/full.toml"), help="sweep grid to run first")
    p.add_argument("--results", type=Path, default=Path("bench/results/full.jsonl"), help="sweep results jsonl")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for quant.csv / quant.md")
    p.add_argument("--no-run", dest="run", action="store_false", help="only write the tables from the results")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")


def cli(args: argparse.Namespace) -> int:
    from edgeasr.bench.grid import Grid
    from edgeasr.bench.report import study_rows
    from edgeasr.bench.sweep import run_sweep

    if args.run:
        summary = run_sweep(Grid.from_toml(args.grid), args.results, num_cpus=args.num_cpus)
        print(f"sweep: {summary.ran} cells run, {summary.skipped} already done")
    rows = study_rows(args.results)
    if not rows:
        print(f"{args.results} has no rows: run without --no-run first")
        return 1
    csv_path, md_path = write_tables(rows, args.out)
    print(f"tables: {md_path}\ncsv: {csv_path}")
    return 0
