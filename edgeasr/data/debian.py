"""Fetch Debian packages with `apt-get download` and unpack them with `dpkg-deb -x`, no root needed.

Several offline speech sources (Asterisk prompts, codec2 samples) ship as Debian packages; the
ordinary apt client fetches them from whatever mirror the machine is configured for.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgeasr.errors import DatasetError


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    root: Path
    """Folder the package was unpacked into (its files lie under root/usr/...)."""

    @property
    def pin(self) -> str:
        return f"{self.name}={self.version}"


def _require(tool: str) -> str:
    found = shutil.which(tool)
    if not found:
        raise DatasetError(f"`{tool}` is not on PATH: this builder needs a Debian-based system with apt and dpkg")
    return found


def download_deb(name: str, workdir: Path) -> DebPackage:
    """Download the .deb of `name` into `workdir` and unpack it into workdir/name."""
    apt, dpkg = _require("apt-get"), _require("dpkg-deb")
    debs = workdir / "debs" / name
    debs.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([apt, "download", name], cwd=debs, capture_output=True, text=True)
    files = sorted(debs.glob("*.deb"))
    if result.returncode != 0 or not files:
        detail = result.stderr.strip()[-600:]
        stale = any(mark in detail for mark in ("Unable to locate", "no installation candidate", "404", "Failed to fetch"))
        hint = ("the package lists look stale or empty: run `apt-get update` (as root) and build again" if stale else
                "check that the Debian package mirror is reachable, or run `apt-get update` (as root) and build again")
        raise DatasetError(f"`apt-get download {name}` failed: {detail}\n{hint}")
    version = subprocess.run([dpkg, "-f", str(files[0]), "Version"], capture_output=True, text=True).stdout.strip()
    root = workdir / name
    unpack = subprocess.run([dpkg, "-x", str(files[0]), str(root)], capture_output=True, text=True)
    if unpack.returncode != 0:
        raise DatasetError(f"`dpkg-deb -x` could not unpack {files[0].name}: {unpack.stderr.strip()[-400:]}")
    return DebPackage(name, version or "unknown", root)
