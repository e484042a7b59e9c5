"""Write a directory atomically and verify it later with a checksum manifest.

A cache entry is built in a temporary sibling directory and renamed into place only when complete,
so an interrupted build never leaves something that looks finished. Every file's sha256 goes into
`MANIFEST.json`; `verify_dir` detects a file changed or truncated afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgeasr.errors import CacheCorruptedError

MANIFEST = "MANIFEST.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, extra: dict | None = None) -> dict:
    files = {
        str(p.relative_to(directory)): sha256_file(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {"files": files, **(extra or {})}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    if not path.exists():
        raise CacheCorruptedError(f"{directory} has no {MANIFEST}: it was not written by edgeasr or is incomplete")
    return json.loads(path.read_text())


def verify_dir(directory: Path) -> dict:
    """Check every file against the manifest; raise CacheCorruptedError naming the first bad file."""
    manifest = read_manifest(directory)
    for name, digest in manifest["files"].items():
        path = directory / name
        if not path.exists():
            raise CacheCorruptedError(f"{path} is missing from the cache entry {directory}")
        if sha256_file(path) != digest:
            raise CacheCorruptedError(f"{path} does not match its checksum: the cache entry {directory} is corrupted")
    return manifest


@contextlib.contextmanager
def atomic_dir(target: Path, extra_manifest: dict | None = None) -> Iterator[Path]:
    """Yield a temporary directory; on success write its manifest and rename it to `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        write_manifest(tmp, extra_manifest)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
