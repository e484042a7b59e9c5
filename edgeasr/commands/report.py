"""`edgeasr report`: the study's tables (markdown) and plots (PNG) from a sweep's results."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="markdown tables and PNG plots from sweep results (jsonl)")
    p.add_argument("results", type=Path, help="results file written by `edgeasr sweep`")
    p.add_argument("--out", type=Path, help="output folder (default: next to the results file)")
    p.add_argument("--study", type=Path, help="also refresh this page's marked block of asterisk-en tables "
                                              "(docs/study.md)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgeasr.bench.report import write_report

    files = write_report(args.results, args.out or args.results.parent)
    if args.study:
        from edgeasr.bench.report import update_study_page

        update_study_page(args.study, args.results)
        print(f"study page: {args.study}")
    print(f"tables: {files.markdown}")
    for path in files.plots:
        print(f"plot: {path}")
    return 0
