"""Which data sets can be built, and building one atomically into the cache.

A builder is a function `build(open_set)`: it calls `open_set(name)` for each set it writes (the
Asterisk builder writes two) and fills the returned temporary folder with `audio/` and
`manifest.jsonl`. Derived sets (long-form, noisy, ...) read other built sets: those named in
`sets.DEPENDS` are built first. What each set stands for is listed in `sets.SETS`. Every folder is
renamed into the cache, with a checksum manifest, only when the
whole builder succeeded, so an interrupted build never looks finished.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from edgeasr.atomic import atomic_dir, verify_dir
from edgeasr.data.asterisk import CALIB_SET, EVAL_SET, build_asterisk
from edgeasr.data.codec2 import build_codec2
from edgeasr.data.derived import (build_longform, build_noisy_10db, build_noisy_20db, build_reverb, build_reverb_192,
                                   build_speed)
from edgeasr.data.hf import HUB_BUILDERS
from edgeasr.data.manifest import MANIFEST_NAME, load_manifest, manifest_path, set_dir
from edgeasr.data.mix import build_calib_mix
from edgeasr.data.moonshine import build_moonshine_samples
from edgeasr.data.sets import DEPENDS, OFFLINE_SETS as OFFLINE_SET_INFO, SETS
from edgeasr.data.tts import build_tts, build_tts_calib
from edgeasr.errors import CacheCorruptedError, DatasetError

log = logging.getLogger(__name__)

Builder = Callable[[Callable[[str], Path]], None]

BUILDERS: dict[str, Builder] = {
    EVAL_SET: build_asterisk,
    CALIB_SET: build_asterisk,
    "moonshine-samples": build_moonshine_samples,
    "tts-en": build_tts,
    "tts-en-calib": build_tts_calib,
    "codec2-calib": build_codec2,
    "longform-en": build_longform,
    "noisy-en-20db": build_noisy_20db,
    "noisy-en-10db": build_noisy_10db,
    "reverb-en": build_reverb,
    "reverb-en-192": build_reverb_192,
    "speed-en": build_speed,
    "calib-mix": build_calib_mix,
    **HUB_BUILDERS,
}
if set(BUILDERS) != set(SETS):  # a set added to one table and not the other is a programming error
    raise RuntimeError(f"data set catalogue and builders disagree: {sorted(set(BUILDERS) ^ set(SETS))}")

SUMMARY_NAME = "SUMMARY.json"
OFFLINE_SETS = tuple(OFFLINE_SET_INFO)


def is_built(name: str) -> bool:
    """True when the set's folder exists and every file matches its checksum."""
    if not manifest_path(name).is_file():
        return False
    try:
        verify_dir(set_dir(name))
    except CacheCorruptedError as exc:
        log.warning("%s; rebuilding %s", exc, name)
        return False
    return True


def summarize(manifest: Path, name: str) -> dict:
    """Utterance count, seconds and transcript coverage of a set's manifest."""
    utts = load_manifest(manifest)
    return {"name": name, "utterances": len(utts), "seconds": round(sum(u.seconds for u in utts), 2),
            "labelled": sum(u.text is not None for u in utts)}


def build_dataset(name: str, force: bool = False) -> Path:
    """Build `name` (and any sibling set its builder writes) unless cached; return its manifest path."""
    builder = BUILDERS.get(name)
    if builder is None:
        raise DatasetError(f"unknown data set {name!r}; known: {', '.join(BUILDERS)}")
    if not force and is_built(name):
        return manifest_path(name)
    for source in DEPENDS.get(name, ()):
        build_dataset(source)
    with contextlib.ExitStack() as stack:
        opened: dict[str, Path] = {}

        def open_set(set_name: str) -> Path:
            extra = {"set": set_name, "builder": builder.__name__}
            opened[set_name] = stack.enter_context(atomic_dir(set_dir(set_name), extra))
            return opened[set_name]

        builder(open_set)
        if name not in opened:
            raise DatasetError(f"builder {builder.__name__} did not write {name}")
        for set_name, tmp in opened.items():
            # Written before the folders are renamed into place, so the checksums cover it.
            info = summarize(tmp / MANIFEST_NAME, set_name)
            (tmp / SUMMARY_NAME).write_text(json.dumps(info, indent=1))
            tqdm.write(f"built {set_name}: {info['utterances']} utterances, {info['seconds'] / 60:.1f} min "
                       f"({info['labelled']} with transcripts)", file=sys.stderr)
    return manifest_path(name)
