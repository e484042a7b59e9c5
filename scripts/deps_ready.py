"""Exit 0 when this checkout is installed (editable) with every requirement of `edgeasr[all]` satisfied.

`make` runs it before `pip install` so that re-running `make check` / `make test` on a ready machine
installs nothing; any missing or out-of-range package, or an install of another checkout, means
"not ready" (exit 1, with the reason on stderr).
"""

from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
DATA_PACKAGES = ("edgeasr.demo", "edgeasr.server", "edgeasr.recipes", "edgeasr.results")
"""Packages mapped from other folders (pyproject's package-dir): a stale editable install lacks them."""


def requirements(extras: set[str]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    found, todo = list(project["dependencies"]), list(extras)
    while todo:
        for line in optional[todo.pop()]:
            req = Requirement(line)
            if req.name == project["name"]:
                todo.extend(req.extras)
            else:
                found.append(line)
    return [Requirement(line) for line in found]


def problems() -> list[str]:
    out = []
    for req in requirements({"all"}):
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            out.append(f"{req.name} is not installed")
            continue
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            out.append(f"{req.name} {version} does not satisfy {req}")
    for name in DATA_PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:  # a subpackage whose parent package is not installed
            spec = None
        if spec is None or not spec.origin or not Path(spec.origin).resolve().is_relative_to(ROOT):
            out.append(f"{name} does not come from this checkout (re-install it: pip install -e .)")
    return out


def main() -> int:
    found = problems()
    for line in found:
        print(f"deps_ready: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
