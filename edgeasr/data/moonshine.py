"""`moonshine-samples`: the two human-read clips shipped in the moonshine-voice wheel.

`endgame_nagg_nell.wav` is synthetic and its script differs from the audio in two lines, so it
stays out: a WER against a wrong reference measures nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from edgeasr.data.manifest import MANIFEST_NAME, Utterance, write_manifest
from edgeasr.data.wavio import convert
from edgeasr.registry import fetch_package, find_file
from edgeasr.zoo.catalog import MOONSHINE_VOICE

SET_NAME = "moonshine-samples"

REFERENCES: dict[str, str] = {
    "beckett": "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better.",
    "two_cities": (
        "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age "
        "of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season "
        "of Light, it was the season of Darkness, it was the spring of hope, it was the winter of "
        "despair, we had everything before us, we had nothing before us, we were all going direct to "
        "Heaven, we were all going direct the other way\u2014in short, the period was so far like the "
        "present period, that some of its noisiest authorities insisted on its being received, for "
        "good or for evil, in the superlative degree of comparison only."
    ),
}


def build_moonshine_samples(open_set: Callable[[str], Path]) -> None:
    package = fetch_package(MOONSHINE_VOICE)
    out = open_set(SET_NAME)
    source = f"{MOONSHINE_VOICE.pin} ({MOONSHINE_VOICE.license})"
    rows = []
    for clip, text in tqdm(REFERENCES.items(), desc=SET_NAME, unit="clip"):
        rel = f"audio/{clip}.wav"
        seconds = convert(find_file(package, f"assets/{clip}.wav"), out / rel)
        rows.append(Utterance(id=clip, audio=rel, text=text, seconds=seconds, source=source))
    write_manifest(out / MANIFEST_NAME, rows)
