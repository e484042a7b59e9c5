"""Read the sweep's results from `bench/results/`: every `*.jsonl` row, `*.md` report and `*.png` plot.

The sweep's row layout may nest recipe and cost fields; columns are found by their last name
(`recipe.w_bits` and `w_bits` both count as `w_bits`), so the tab keeps working as that layout grows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

COLUMNS = ("model", "method", "w_bits", "a_bits", "group_size", "dataset", "wer", "effective_bits", "memory_io_bytes",
           "bops", "weight_bytes", "total_bytes", "rtfx", "quantize_seconds", "checkpoint_cached", "threads", "status",
           "error")
"""Columns the tab shows and plots, in this order, when the results have them."""


@dataclass
class StudyResults:
    root: Path
    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    plots: list[Path] = field(default_factory=list)
    reports: list[Path] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.table.empty and not self.plots and not self.reports

    def filtered(self, models: list[str] | None, methods: list[str] | None) -> pd.DataFrame:
        table = self.table
        if models and "model" in table:
            table = table[table["model"].isin(models)]
        if methods and "method" in table:
            table = table[table["method"].isin(methods)]
        return table

    def choices(self, column: str) -> list[str]:
        return sorted(self.table[column].dropna().astype(str).unique()) if column in self.table else []


def _read_rows(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            # A sweep appends while it runs: a half-written last line is expected, not fatal.
            log.warning("%s:%d is not JSON; skipped", path, number)
    return rows


def _tidy(raw: pd.DataFrame) -> pd.DataFrame:
    """Pick each wanted column by its last dotted name (the shortest path first) and scale WER to percent."""
    picked = {}
    for name in COLUMNS:
        hits = sorted((c for c in raw.columns if c == name or c.endswith("." + name)), key=len)
        if hits:
            # Rows of different layouts may hold the same field at different paths: the shortest wins.
            column = raw[hits[0]]
            for other in hits[1:]:
                column = column.combine_first(raw[other])
            picked[name] = column
    table = pd.DataFrame(picked)
    if {"model", "method"} <= set(table):
        # Sweep cells name their model and method; per-utterance logs (fp_eval/) do not.
        table = table[table["model"].notna() & table["method"].notna()]
    if "wer" in table:
        wer = pd.to_numeric(table["wer"], errors="coerce")
        # Rows store WER either as a fraction or already in percent.
        table["wer"] = (wer * 100 if wer.max(skipna=True) <= 1.5 else wer).round(2)
        table = table.rename(columns={"wer": "wer_percent"})
    for column, unit, scale in (("memory_io_bytes", "memory_io_mb", 1e6), ("weight_bytes", "weight_mb", 1e6),
                                ("total_bytes", "total_mb", 1e6), ("bops", "gbops", 1e9)):
        if column in table:
            table[unit] = (pd.to_numeric(table.pop(column), errors="coerce") / scale).round(1)
    return table


def load_results(root: Path) -> StudyResults:
    results = StudyResults(root)
    if not root.is_dir():
        return results
    rows = [row for path in sorted(root.rglob("*.jsonl")) for row in _read_rows(path)]
    if rows:
        raw = pd.json_normalize(rows)
        if "key" in raw:
            # A resumed or re-run sweep appends a cell again: the newest row of each cell wins.
            raw = raw[raw["key"].isna() | ~raw["key"].duplicated(keep="last")]
        results.table = _tidy(raw).reset_index(drop=True)
    results.plots = sorted(root.rglob("*.png"))
    results.reports = sorted(p for p in root.rglob("*.md") if p.stat().st_size)
    return results


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """WER (%) per model and method (rows) and weight/activation bits (columns), like the report's tables;
    cells a method refuses say so. `table` should hold one dataset."""
    need = {"model", "method", "w_bits", "a_bits", "wer_percent"}
    if table.empty or not need <= set(table):
        return pd.DataFrame()
    rows = table.assign(setting=[("FP16" if w >= 16 else f"W{w:.0f}A{a:.0f}") for w, a in
                                 zip(table["w_bits"].fillna(16), table["a_bits"].fillna(16))])
    status = rows["status"].fillna("ok") if "status" in rows else pd.Series("ok", index=rows.index)
    shown = rows["wer_percent"].map(lambda v: "" if pd.isna(v) else f"{v:.2f}").where(status == "ok", status)
    pivot = rows.assign(shown=shown).pivot_table(index=["model", "method"], columns="setting", values="shown",
                                                 aggfunc="last")
    order = sorted(pivot.columns, key=lambda s: (s == "FP16", -int(s[1]) if s != "FP16" else 0, s))
    order = ["FP16", *[c for c in order if c != "FP16"]] if "FP16" in order else order
    return pivot[order].fillna("").reset_index()
