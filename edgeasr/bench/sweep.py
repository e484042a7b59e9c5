"""Run a grid on Ray: one task per cell, rows appended to a jsonl file as they finish, resumable.

Ray starts locally (`ray.init(num_cpus=...)`) unless an address of a running cluster is given; cluster
nodes need edgeasr installed and the same cache (models, data sets) reachable. Two cells that share a
recipe (the same checkpoint on two sets) never run at once, so a checkpoint is written once.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from edgeasr.bench.grid import Cell, Grid

log = logging.getLogger(__name__)


@dataclass
class SweepSummary:
    """What one invocation of the sweep did."""

    cells: int
    """Cells in the grid."""
    skipped: int
    """Cells already in the results file."""
    ran: int
    """Cells run now."""
    failed: int
    """Cells run now that were refused or failed."""


def read_rows(path: Path) -> list[dict]:
    """Rows of a results file; a line cut short by an interrupted write is ignored."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("ignoring a damaged line in %s", path)
    return rows


def rewrite_rows(path: Path, rows: list[dict], read: int) -> None:
    """Replace the first `read` lines of a results file with `rows` (a rescoring script's edit of them), keeping the
    lines a running sweep appended since they were read; the file is swapped in whole by a rename."""
    appended = path.read_text().splitlines()[read:]
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(line + "\n" for line in appended))
    tmp.replace(path)


def _append(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _start_ray(address: str | None, num_cpus: int | None, verbose: bool) -> bool:
    """Connect to `address` or start a local instance; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=verbose)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=verbose)
    return True


def _recipe_id(cell: Cell) -> str:
    return json.dumps(cell.recipe.to_dict(), sort_keys=True)


def _crash_row(cell: Cell, exc: Exception) -> dict:
    """The row of a cell whose worker died (killed for memory, segfault) before it could write one."""
    from edgeasr.bench.cell import base_row, scrub

    return {**base_row(cell), "status": "failed", "error": scrub(f"worker died: {type(exc).__name__}: {exc}")[:2000]}


def run_sweep(grid: Grid, results: Path, address: str | None = None, num_cpus: int | None = None,
              retry_failed: bool = False, progress: bool = True, verbose: bool = False,
              remeasure: bool = False) -> SweepSummary:
    """Run every cell of `grid` not yet in `results` (failed ones too with `retry_failed`, all of them with
    `remeasure`: the new rows are appended and the reports keep the newest row of a measurement)."""
    import ray

    from edgeasr.bench.cell import run_cell

    cells = grid.cells()
    done = set() if remeasure else {r["key"] for r in read_rows(results) if r.get("status") == "ok" or not retry_failed}
    todo = [c for c in cells if done.isdisjoint(c.keys)]
    summary = SweepSummary(len(cells), len(cells) - len(todo), 0, 0)
    if not todo:
        return summary
    started = _start_ray(address, num_cpus, verbose)
    task = ray.remote(num_cpus=grid.cpus_per_cell, max_retries=0)(run_cell)
    in_flight: dict = {}
    try:
        with tqdm(total=len(todo), desc="sweep", unit="cell", disable=not progress) as bar:
            while todo or in_flight:
                busy = {_recipe_id(c) for c in in_flight.values()}
                for cell in list(todo):
                    if _recipe_id(cell) not in busy:
                        in_flight[task.remote(cell, grid.cpus_per_cell)] = cell
                        busy.add(_recipe_id(cell))
                        todo.remove(cell)
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                cell = in_flight.pop(ready[0])
                try:
                    row = ray.get(ready[0])
                except Exception as exc:  # the worker process itself died
                    row = _crash_row(cell, exc)
                _append(results, row)
                summary.ran += 1
                summary.failed += row["status"] != "ok"
                bar.set_postfix_str(f"{cell.label}: {row.get('wer', row['status'])}")
                bar.update()
    finally:
        if started:
            ray.shutdown()
    return summary
