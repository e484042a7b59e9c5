"""Utterance manifests: one JSON object per line with id, audio, text, seconds and source.

Audio paths are stored relative to the manifest's folder so a built set can be moved or copied to a
board as one directory; `load_manifest` resolves them to absolute paths.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from edgeasr.data.sets import SETS
from edgeasr.errors import DatasetError
from edgeasr.paths import cache_dir

MANIFEST_NAME = "manifest.jsonl"


@dataclass
class Utterance:
    """One clip of a set. `text` is None for calibration-only audio without a transcript."""

    id: str
    audio: str
    text: str | None
    seconds: float
    source: str


def set_dir(name: str) -> Path:
    """The cache folder of the built set `name` (it may not exist yet)."""
    return cache_dir("data") / name


def manifest_path(name: str) -> Path:
    return set_dir(name) / MANIFEST_NAME


def write_manifest(path: Path, utterances: Iterable[Utterance]) -> Path:
    """Write `utterances` to the jsonl file `path`, storing audio paths relative to its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    with open(path, "w", encoding="utf-8") as handle:
        for utt in utterances:
            row = asdict(utt)
            audio = Path(utt.audio)
            if audio.is_absolute():
                row["audio"] = Path(os.path.relpath(audio.resolve(), base)).as_posix()
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _resolve(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".jsonl" or candidate.is_file():
        if not candidate.is_file():
            raise DatasetError(f"manifest {candidate} does not exist")
        return candidate
    if candidate.is_dir() and (candidate / MANIFEST_NAME).is_file():
        return candidate / MANIFEST_NAME
    name = str(name_or_path)
    path = manifest_path(name)
    if path.is_file():
        return path
    if name in SETS:
        raise DatasetError(f"data set {name!r} is not built yet: run `edgeasr data build {name}` first")
    raise DatasetError(
        f"unknown data set {name!r}: not a manifest file and not one of {', '.join(sorted(SETS))}"
    )


def load_manifest(name_or_path: str | Path, limit: int | None = None) -> list[Utterance]:
    """Load a built set by name, a manifest folder, or a jsonl path; audio paths come back absolute."""
    path = _resolve(name_or_path)
    base = path.parent.resolve()
    utterances: list[Utterance] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if limit is not None and len(utterances) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                utt = Utterance(id=str(row["id"]), audio=os.path.normpath(base / row["audio"]), text=row.get("text"),
                                seconds=float(row["seconds"]), source=str(row.get("source", "")))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise DatasetError(f"{path}:{number}: malformed manifest line ({exc})") from None
            utterances.append(utt)
    if not utterances:
        raise DatasetError(f"manifest {path} holds no utterances")
    return utterances
