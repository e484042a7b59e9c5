"""`tts-en` / `tts-en-calib`: Harvard sentences spoken by offline Debian TTS voices (flite rms/awb/slt/kal,
festival slt); lists 1-4 for evaluation, lists 5-8 (never evaluated) for calibration.

Synthetic speech is easier or harder than real speech in odd ways, so this set complements the real
recordings and never replaces them. Every voice is required: a set whose contents depended on what
happens to be installed would give different WERs on different machines.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from edgeasr.data.harvard import CALIB_LISTS, EVAL_LISTS, harvard_sentences
from edgeasr.data.manifest import MANIFEST_NAME, Utterance, write_manifest
from edgeasr.data.wavio import convert
from edgeasr.errors import DatasetError

SET_NAME = "tts-en"
CALIB_SET = "tts-en-calib"
FLITE_VOICES = ("rms", "awb", "slt", "kal")
FESTIVAL_VOICE = "cmu_us_slt_arctic_hts"


@dataclass(frozen=True)
class Voice:
    name: str
    """Used in utterance ids: `flite-rms`, `festival-slt`."""
    program: str
    debian: str
    """Debian package(s) to install when the program or voice is missing."""

    def command(self, text: str, out: Path) -> list[str]:
        if self.program == "flite":
            return ["flite", "-voice", self.name.removeprefix("flite-"), "-t", text, "-o", str(out)]
        return ["text2wave", "-eval", f"(voice_{FESTIVAL_VOICE})", "-o", str(out)]

    def stdin(self, text: str) -> str | None:
        return text if self.program == "text2wave" else None


VOICES = tuple(Voice(f"flite-{v}", "flite", "flite") for v in FLITE_VOICES) + (
    Voice("festival-slt", "text2wave", "festival festvox-us-slt-hts"),
)


def _check_voices() -> None:
    """Fail early, naming the Debian packages to install, if a program or voice is missing."""
    missing = [v.debian for v in VOICES if shutil.which(v.program) is None]
    if shutil.which("flite"):
        listed = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout.split()
        if any(v not in listed for v in FLITE_VOICES):
            missing.append("flite (a build with the rms, awb, slt and kal voices)")
    if missing:
        raise DatasetError(f"{SET_NAME} needs offline TTS programs: apt-get install {' '.join(dict.fromkeys(missing))}")


def _synthesize(voice: Voice, text: str, out: Path) -> None:
    result = subprocess.run(voice.command(text, out), input=voice.stdin(text), capture_output=True, text=True)
    if result.returncode != 0 or not out.is_file() or out.stat().st_size <= 44:
        hint = f"; is {voice.debian} installed?" if voice.program == "text2wave" else ""
        raise DatasetError(f"{voice.name} failed on {text!r}: {result.stderr.strip()[-300:]}{hint}")


def build_tts(open_set: Callable[[str], Path]) -> None:
    """`tts-en`: every voice reads Harvard lists 1-4."""
    _speak(open_set(SET_NAME), SET_NAME, EVAL_LISTS)


def build_tts_calib(open_set: Callable[[str], Path]) -> None:
    """`tts-en-calib`: every voice reads Harvard lists 5-8 (disjoint from the evaluation sentences)."""
    _speak(open_set(CALIB_SET), CALIB_SET, CALIB_LISTS)


def _speak(out: Path, set_name: str, lists: tuple[int, ...]) -> None:
    _check_voices()
    jobs = [(voice, sid, text) for voice in VOICES for sid, text in harvard_sentences(lists)]

    def one(job: tuple[Voice, str, str], tmp: Path) -> Utterance:
        voice, sid, text = job
        uid = f"{voice.name}-{sid}"
        raw = tmp / f"{uid}.wav"
        _synthesize(voice, text, raw)
        rel = f"audio/{uid}.wav"
        seconds = convert(raw, out / rel)  # flite kal is 8 kHz, festival hts 32 kHz: soxr to 16 kHz
        return Utterance(id=uid, audio=rel, text=text, seconds=seconds, source=f"{voice.name} (Debian {voice.debian})")

    with tempfile.TemporaryDirectory(prefix="edgeasr-tts-") as tmp, \
            ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        # Festival takes ~0.7 s a sentence; the subprocesses run in parallel.
        rows = list(tqdm(pool.map(lambda j: one(j, Path(tmp)), jobs), total=len(jobs), desc=set_name, unit="clip"))
    write_manifest(out / MANIFEST_NAME, rows)
