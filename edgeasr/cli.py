"""`edgeasr` command line. Each subcommand is a module in `edgeasr/commands/` with `register(subparsers)`.

Subcommand modules import their heavy dependencies (torch, ray...) inside the handler so `edgeasr --help`
stays fast and works on an edge install.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from edgeasr.errors import EdgeASRError


def build_parser() -> argparse.ArgumentParser:
    import edgeasr.commands as commands

    parser = argparse.ArgumentParser(prog="edgeasr", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"edgeasr.commands.{info.name}").register(sub)
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
