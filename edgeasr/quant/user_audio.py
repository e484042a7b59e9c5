"""A folder of the user's own unlabelled recordings as a calibration set (`edgeasr quantize --calib-dir`)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from edgeasr.errors import DatasetError
from edgeasr.paths import cache_dir

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus", ".webm")
"""Files of the folder read as recordings (WAV directly, the rest through PyAV, as everywhere else)."""


def folder_manifest(folder: str | Path) -> Path:
    """Write (once per folder content) a manifest of the folder's recordings, without transcripts, and return
    its path. Every file is read through `prepare_audio` (any rate, mono or stereo), so a file the tool cannot
    use is reported here, by name, before quantization starts."""
    from edgeasr.audio import prepare_audio

    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"--calib-dir {folder}: not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise DatasetError(f"--calib-dir {folder}: no recordings ({', '.join(AUDIO_SUFFIXES)})")
    key = hashlib.sha256("\n".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
                         .encode()).hexdigest()[:12]
    out = cache_dir("data") / f"user-{key}" / "manifest.jsonl"
    if out.exists():
        return out
    rows = []
    for i, path in enumerate(files):
        seconds = prepare_audio(path).size / 16000
        rows.append({"id": f"user-{i:04d}", "audio": str(path.resolve()), "text": None,
                     "seconds": round(seconds, 3), "source": "user"})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    log.info("--calib-dir %s: %d recordings, %.0f s", folder, len(rows), sum(r["seconds"] for r in rows))
    return out
