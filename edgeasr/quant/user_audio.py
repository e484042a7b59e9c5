"""The user's own unlabelled recordings as a calibration set: `edgeasr quantize --calib-dir`, the demo's
"Tune for my voice" and the personalisation bench all calibrate through `folder_manifest`.

Every recording is read as the rest of the tool reads audio (any rate, mono or stereo, WAV directly and the
rest through PyAV); a long one is cut at quiet points into pieces a model window holds, written once as
16 kHz mono WAV into the cache. The manifest holds no transcripts. Calibration then runs the decoder on the FP model's
own output (`quant.calibrate`), so no labels are needed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from edgeasr.errors import DatasetError

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus", ".webm")
"""Files of the folder read as recordings (WAV directly, the rest through PyAV, as everywhere else)."""
PIECE_SECONDS = 20.0
"""Longest calibration piece: a longer recording is cut at its quietest frames, because the decoder transcribes
each piece greedily for its calibration inputs and both model families hallucinate past ~30 s."""
MIN_SPEECH_SECONDS = 1.0
"""Least speech (webrtcvad) over all recordings; below it there is nothing of the voice to calibrate on."""


@dataclass(frozen=True)
class Recording:
    """One file of the folder as it was read."""

    name: str
    """Path relative to the folder (never the folder itself: messages reach browsers)."""
    sample_rate: int
    channels: int
    seconds: float
    speech_seconds: float
    """Seconds webrtcvad calls speech."""
    pieces: int


@dataclass(frozen=True)
class UserAudio:
    """A folder's recordings turned into a calibration manifest."""

    manifest: Path
    recordings: tuple[Recording, ...]

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.recordings)

    @property
    def speech_seconds(self) -> float:
        return sum(r.speech_seconds for r in self.recordings)

    @property
    def pieces(self) -> int:
        return sum(r.pieces for r in self.recordings)


def _recordings(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def _key(files: list[Path]) -> str:
    """The recordings' places and bytes: a changed or moved file gives a new manifest."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.resolve()).encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:12]


def read_user_audio(folder: str | Path, label: str | None = None) -> UserAudio:
    """Read every recording under `folder` into a cached, transcript-free manifest of ≤ `PIECE_SECONDS` pieces.

    `label` names the folder in messages (default "--calib-dir FOLDER"). A file the tool cannot read stops it
    with that file's name and reason (a user's folder should not be half used silently); a folder without
    recordings, or whose recordings hold no speech, is one `DatasetError`.
    """
    from edgeasr.audio import SAMPLE_RATE, load_audio, prepare_audio, split_on_silence, voiced_seconds, write_wav
    from edgeasr.data.manifest import MANIFEST_NAME, Utterance, load_manifest, write_manifest
    from edgeasr.paths import cache_dir

    folder = Path(folder)
    label = label or f"--calib-dir {folder}"
    if not folder.is_dir():
        raise DatasetError(f"{label}: not a folder")
    files = _recordings(folder)
    if not files:
        raise DatasetError(f"{label}: no recordings (files ending in {', '.join(AUDIO_SUFFIXES)})")
    out = cache_dir("data") / f"user-{_key(files)}"
    rows, recordings = [], []
    for i, path in enumerate(files):
        name = path.relative_to(folder).as_posix()
        raw, rate = load_audio(path, name)
        audio = prepare_audio(raw, rate, name)
        speech = voiced_seconds(audio)
        pieces = split_on_silence(audio, PIECE_SECONDS) if speech else []
        recordings.append(Recording(name, rate, raw.shape[1], round(audio.size / SAMPLE_RATE, 2), speech, len(pieces)))
        for k, (start, end) in enumerate(pieces):
            piece = path.resolve()  # a recording of one piece is read as it is, like any manifest's audio
            if len(pieces) > 1:
                piece = out / "audio" / f"{i:04d}-{k:02d}.wav"
                if not piece.exists():
                    piece.parent.mkdir(parents=True, exist_ok=True)
                    write_wav(piece, audio[start:end])
            rows.append(Utterance(f"user-{i:04d}-{k:02d}", str(piece), None, round((end - start) / SAMPLE_RATE, 3),
                                  f"user: {name}"))
    speech = sum(r.speech_seconds for r in recordings)
    if speech < MIN_SPEECH_SECONDS:
        raise DatasetError(f"{label}: no speech found ({speech:.1f} s detected in {len(files)} recording"
                           f"{'s' * (len(files) != 1)}, {sum(r.seconds for r in recordings):.1f} s long); "
                           "record yourself speaking")
    for r in recordings:
        if not r.pieces:
            log.warning("%s: %s holds no speech; left out", label, r.name)
    manifest = out / MANIFEST_NAME
    if not manifest.exists() or len(load_manifest(manifest)) != len(rows):
        write_manifest(manifest, rows)
    result = UserAudio(manifest, tuple(recordings))
    log.info("%s: %d recordings, %.0f s (%.0f s of speech) in %d pieces", label, len(recordings), result.seconds,
             result.speech_seconds, result.pieces)
    return result


def folder_manifest(folder: str | Path) -> Path:
    """The calibration manifest of `--calib-dir FOLDER` (see `read_user_audio`)."""
    return read_user_audio(folder).manifest


def unlabelled_manifest(utterances: Iterable, path: Path) -> Path:
    """Write `utterances` (data.manifest.Utterance) to `path` without their transcripts: a labelled set used as
    a user's recordings would be (the personalisation bench calibrates on one TTS voice this way)."""
    from edgeasr.data.manifest import write_manifest

    return write_manifest(path, [replace(u, text=None) for u in utterances])
