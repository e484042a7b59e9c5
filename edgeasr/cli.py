"""`edgeasr` command line: fetch models, build data sets, quantize, evaluate, export and benchmark.

Each entry of `COMMANDS` is a module in `edgeasr/commands/` whose `register(subparsers)` adds its
subcommands (see `edgeasr.plugins` for the registry pattern).

Subcommand modules import their heavy dependencies (torch, ray...) inside the handler so `edgeasr --help`
stays fast and works on an edge install.
"""

from __future__ import annotations

import argparse
import logging
import sys

from edgeasr.errors import EdgeASRError
from edgeasr.plugins import load

COMMANDS: dict[str, str] = {
    "bench": "edgeasr.commands.bench:register",
    "data": "edgeasr.commands.data:register",
    "export": "edgeasr.commands.export:register",
    "models": "edgeasr.commands.models:register",         # fetch, models
    "quantize": "edgeasr.commands.quantize:register",
    "report": "edgeasr.commands.report:register",
    "sweep": "edgeasr.commands.sweep:register",
    "transcribe": "edgeasr.commands.transcribe:register",  # transcribe, eval
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeasr", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for target in COMMANDS.values():
        load(target)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except EdgeASRError as exc:
        print(f"edgeasr: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
