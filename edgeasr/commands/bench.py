"""`edgeasr bench NAME`: benchmarks, one sub-subcommand each.

Add a benchmark with one line in `BENCHES` (the `edgeasr.plugins` pattern): "module:cli", where `cli`
takes the parsed arguments and returns an exit code and the module's `add_arguments(parser)` adds its
options. Keep such modules' top-level imports light: they are imported whenever the CLI builds its parser.
"""

from __future__ import annotations

import argparse
import sys

from edgeasr.plugins import load

BENCHES: dict[str, str] = {
    "stream": "edgeasr.bench.stream:cli",
    "runtime": "edgeasr.bench.runtime:cli",
    "quant": "edgeasr.bench.quant:cli",
    "server": "edgeasr.bench.server:cli",
    "kernels": "edgeasr.bench.kernels:cli",
    "personal": "edgeasr.bench.personal:cli",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks (latency, speed, growth); see `edgeasr bench -h`")
    benches = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for name, target in BENCHES.items():
        handler = load(target)
        module = sys.modules[handler.__module__]
        bp = benches.add_parser(name, help=(module.__doc__ or name).splitlines()[0])
        module.add_arguments(bp)
        bp.set_defaults(handler=handler)
