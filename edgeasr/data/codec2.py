"""`codec2-calib`: the speech and radio clips of Debian codec2-examples (LGPL-2.1), text None.

The clips are mostly 8 kHz Harvard sentences and HF-radio recordings with no transcripts, so they
serve only as calibration audio and for noise-robustness checks. The `wav/` folder holds them with
headers (some mu-law); `raw/speech_orig_16k.wav` is the one wideband clip. The headerless `.raw`
files repeat the wav clips or hold modem test signals, so they are left out.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from edgeasr.data.debian import download_deb
from edgeasr.data.manifest import MANIFEST_NAME, Utterance, write_manifest
from edgeasr.data.wavio import convert
from edgeasr.errors import DatasetError

PACKAGE = "codec2-examples"
LICENSE = "LGPL-2.1"
SET_NAME = "codec2-calib"


def build_codec2(open_set: Callable[[str], Path]) -> None:
    with tempfile.TemporaryDirectory(prefix="edgeasr-codec2-") as tmp:
        pkg = download_deb(PACKAGE, Path(tmp))
        clips = sorted(p for p in pkg.root.rglob("*.wav") if p.parent.name in {"wav", "raw"})
        if not clips:
            raise DatasetError(f"{PACKAGE} {pkg.version} holds no wav clips: layout changed?")
        out = open_set(SET_NAME)
        source = f"{PACKAGE}={pkg.version} ({LICENSE})"
        rows = []
        for clip in tqdm(clips, desc=SET_NAME, unit="clip"):
            rel = f"audio/{clip.stem}.wav"
            seconds = convert(clip, out / rel)
            rows.append(Utterance(id=clip.stem, audio=rel, text=None, seconds=seconds, source=source))
        write_manifest(out / MANIFEST_NAME, rows)
