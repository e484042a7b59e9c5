"""`edgeasr sweep`: run a grid of models × methods × bit settings × sets on Ray, resumably."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="quantize and evaluate a grid (TOML) on Ray; rows go to a jsonl file")
    p.add_argument("grid", type=Path, help="grid file (see bench/grids/)")
    p.add_argument("--results", type=Path, help="results jsonl (default: bench/results/GRID.jsonl); "
                   "cells already in it are skipped")
    p.add_argument("--address", help="address of a running Ray cluster (default: start one locally)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--retry-failed", action="store_true", help="run refused/failed cells again")
    p.add_argument("--remeasure", action="store_true",
                   help="run every cell again, done or not (after a change to the engine or a method: the "
                        "reports keep the newest row of each measurement)")
    p.add_argument("--dry-run", action="store_true", help="list the cells still to run and stop")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgeasr.bench.grid import Grid
    from edgeasr.bench.sweep import read_rows, run_sweep

    grid = Grid.from_toml(args.grid)
    results = args.results or Path("bench/results") / f"{args.grid.stem}.jsonl"
    if args.dry_run:
        done = {r["key"] for r in read_rows(results)}
        for cell in grid.cells():
            print(f"{'todo' if done.isdisjoint(cell.keys) else 'done'}  {cell.label}")
        return 0
    summary = run_sweep(grid, results, args.address, args.num_cpus, args.retry_failed,
                        verbose=args.verbose, remeasure=args.remeasure)
    print(f"{summary.ran} cells run ({summary.failed} refused or failed), {summary.skipped} already done, "
          f"{summary.cells} in the grid: {results}")
    return 0
