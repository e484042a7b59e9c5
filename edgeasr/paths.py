"""Where edgeasr keeps downloaded packages, rebuilt models, data sets, checkpoints and bundles."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

ENV_VAR = "EDGEASR_CACHE"


def cache_root() -> Path:
    """The cache root: $EDGEASR_CACHE, else $XDG_CACHE_HOME/edgeasr, else ~/.cache/edgeasr."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "edgeasr"


def cache_dir(kind: str) -> Path:
    """A subfolder of the cache root (packages, models, data, checkpoints, bundles), created on demand."""
    path = cache_root() / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_data(package: str) -> Path:
    """The folder of a data package shipped in the wheel (`edgeasr.recipes`, `edgeasr.results`).

    From a source checkout (editable install) this is the repository folder the package is mapped to.
    """
    return Path(str(files(package)))
