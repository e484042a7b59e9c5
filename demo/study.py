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

COLUMNS = ("model", "method", "w_bits", "a_bits", "group_size", "dataset", "wer", "memory_io_bytes", "bops",
           "weight_bytes", "rtfx", "status", "error")
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
    """Pick each wanted column by its last dotted name (the shortest path wins) and scale WER to percent."""
    picked = {}
    for name in COLUMNS:
        hits = sorted((c for c in raw.columns if c == name or c.endswith("." + name)), key=len)
        if hits:
            picked[name] = raw[hits[0]]
    table = pd.DataFrame(picked)
    if "wer" in table:
        wer = pd.to_numeric(table["wer"], errors="coerce")
        # Rows store WER either as a fraction or already in percent.
        table["wer"] = (wer * 100 if wer.max(skipna=True) <= 1.5 else wer).round(2)
        table = table.rename(columns={"wer": "wer_percent"})
    for column, unit, scale in (("memory_io_bytes", "memory_io_mb", 1e6), ("weight_bytes", "weight_mb", 1e6),
                                ("bops", "gbops", 1e9)):
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
            raw = raw.drop_duplicates(subset="key", keep="last")
        results.table = _tidy(raw).reset_index(drop=True)
    results.plots = sorted(root.rglob("*.png"))
    results.reports = sorted(p for p in root.rglob("*.md") if p.stat().st_size)
    return results
