"""The bundle format, shared by the exporter (which writes it) and the runtime (which checks it).

A bundle is a directory (or one uncompressed tar of it) holding `bundle.json`, three ONNX graphs
(encoder, cross-attention K/V, decoder step with KV cache), `tokenizer.json` and a `README.md` card.
`bundle.json` lists every file's sha256; its `content_hash` is the hash of that list, so one string
names the exact weights. Loading re-hashes the files and checks the graphs' inputs against the
declared shapes: a corrupt or mismatched bundle is refused with CheckpointError.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgeasr.errors import CheckpointError

FORMAT = "edgeasr-bundle-1"
META = "bundle.json"
ARCHIVE_SUFFIX = ".edgeasr.tar"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def content_hash(files: dict[str, str]) -> str:
    """One hash for the whole bundle: sha256 over the sorted (name, file hash) list."""
    return hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()


@dataclass(frozen=True)
class BundleMeta:
    """`bundle.json`, parsed."""

    directory: Path
    data: dict

    @property
    def family(self) -> str:
        return self.data["family"]

    @property
    def graphs(self) -> dict[str, Path]:
        return {k: self.directory / v for k, v in self.data["graphs"].items()}

    @property
    def shapes(self) -> dict:
        return self.data["shapes"]

    @property
    def label(self) -> str:
        return self.data["label"]


def unpack_archive(archive: Path, cache: Path) -> Path:
    """Extract a bundle archive once into `cache/<archive name>-<archive sha256>`; return the directory.

    Keyed by the archive's bytes, so a re-exported or damaged archive of the same name never reuses an
    older extraction. Extracted into a temporary sibling and verified before it is renamed into place:
    a truncated, corrupted or foreign archive is refused and leaves nothing in the cache.
    """
    target = cache / f"{archive.name.removesuffix(ARCHIVE_SUFFIX)}-{file_sha256(archive)[:16]}"
    if (target / META).exists():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache))
    try:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise CheckpointError(f"{archive} is not a readable bundle archive: {exc}") from exc
        try:
            read_bundle(tmp)
        except CheckpointError as exc:
            raise CheckpointError(f"{archive} holds a damaged bundle: {exc}") from exc
        try:
            tmp.rename(target)
        except OSError:  # another process extracted the same archive meanwhile: keep its copy
            if not (target / META).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def read_bundle(directory: Path, verify: bool = True) -> BundleMeta:
    """Parse and (by default) verify a bundle directory."""
    meta_path = directory / META
    if not meta_path.exists():
        raise CheckpointError(f"{directory} is not an edgeasr bundle (no {META}); make one with `edgeasr export`")
    try:
        data = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{meta_path} is corrupted: {exc}") from exc
    if data.get("format") != FORMAT:
        raise CheckpointError(f"{directory} has bundle format {data.get('format')!r}; this edgeasr reads {FORMAT}: "
                              "export it again with this version")
    files = data.get("files", {})
    if content_hash(files) != data.get("content_hash"):
        raise CheckpointError(f"{meta_path} was edited: its file list does not match its content hash")
    if verify:
        for name, digest in files.items():
            path = directory / name
            if not path.exists():
                raise CheckpointError(f"{path} is missing from the bundle {directory}")
            if file_sha256(path) != digest:
                raise CheckpointError(f"{path} does not match its hash in {META}: the bundle is corrupted or was "
                                      "modified; export it again (edgeasr export ...)")
    return BundleMeta(directory, data)


def check_graph_inputs(meta: BundleMeta, names: dict[str, list[str]]) -> None:
    """Refuse graphs whose inputs do not fit the bundle's declared family and shapes."""
    layers = meta.shapes["layers"]
    expected = {"encoder": 1, "cross_kv": 1, "decoder": 1 + 4 * layers}
    for graph, count in expected.items():
        if len(names[graph]) != count:
            raise CheckpointError(f"{meta.directory}: the {graph} graph has {len(names[graph])} inputs, but a "
                                  f"{layers}-layer {meta.family} bundle needs {count}: graphs from different models")
