"""`asterisk-en` / `asterisk-en-calib`: the Asterisk core sound prompts (one US speaker, G.722 16 kHz).

Audio comes from the Debian package asterisk-core-sounds-en-g722, transcripts from
core-sounds-en.txt.gz in asterisk-core-sounds-en (both CC-BY-SA-3.0). Prompts of three or more
words are the evaluation set; the shorter ones (digits, letters, single words) are kept for
calibration, where a missing word of context does not matter.
"""

from __future__ import annotations

import gzip
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from edgeasr.data.debian import download_deb
from edgeasr.data.manifest import MANIFEST_NAME, Utterance, write_manifest
from edgeasr.data.wavio import convert
from edgeasr.errors import DatasetError

AUDIO_PACKAGE = "asterisk-core-sounds-en-g722"
TEXT_PACKAGE = "asterisk-core-sounds-en"
LICENSE = "CC-BY-SA-3.0"
EVAL_SET = "asterisk-en"
CALIB_SET = "asterisk-en-calib"
MIN_EVAL_WORDS = 3

# Misspellings in the upstream transcript file; the speaker says the real word.
TYPOS = {
    "exclaimation": "exclamation",
    "umute": "unmute",
    "represenatives": "representatives",
    "Un-indentified": "Unidentified",
    "witheld": "withheld",
    "fourtieth": "fortieth",
}
_TYPO_RE = re.compile(r"\b(" + "|".join(map(re.escape, TYPOS)) + r")\b")
_NOTE_RE = re.compile(r"\(\s*note:[^)]*\)", re.IGNORECASE)
_PAREN_RE = re.compile(r"\([^)]*\)")
_BRACKET_RE = re.compile(r"\[[^\]]*\]|<[^>]*>")
_ELLIPSIS_RE = re.compile(r"\.{2,}|…")
_WORD_RE = re.compile(r"[A-Za-z0-9]")


def clean_transcript(text: str) -> str | None:
    """Turn one upstream transcript into what the speaker actually says, or None if she says nothing.

    Rules, applied in this order:

    1. `(note: ...)` annotations are removed (`IAX (note: does not say "2")` -> `IAX`).
    2. Any other parenthesised stage direction is removed: `(simple tone sound plays)`,
       `(10 seconds of silence)`.
    3. Square- and angle-bracketed descriptions are removed: `[ascending tones]`, `dot [.]`,
       `<beep ascending>`.
    4. `*` is spoken "star" and `#` is spoken "pound" (US telephone usage, as in the other prompts).
    5. Ellipses (`...`, which mark where Asterisk splices in another prompt) become a space.
    6. Known typos are fixed (see `TYPOS`): exclaimation, umute, represenatives, Un-indentified,
       witheld, fourtieth; the hyphen of `exclamation-point` becomes a space, as spoken.
    7. Whitespace is collapsed and stray leading punctuation (`, ...`) stripped.
    8. A prompt with no letter or digit left (tones, silence, screaming monkeys) returns None.
    """
    text = _NOTE_RE.sub(" ", text)
    text = _PAREN_RE.sub(" ", text)
    text = _BRACKET_RE.sub(" ", text)
    text = re.sub(r"\*", " star ", text)
    text = re.sub(r"#", " pound ", text)
    text = _ELLIPSIS_RE.sub(" ", text)
    text = _TYPO_RE.sub(lambda m: TYPOS[m.group(1)], text)
    text = text.replace("exclamation-point", "exclamation point")
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = " ".join(text.split()).lstrip(" ,.;:")
    return text if _WORD_RE.search(text) else None


def parse_transcripts(path: Path) -> dict[str, str]:
    """Read core-sounds-en.txt(.gz): `key: text` lines, `;` comments; keys are paths without extension."""
    opener = gzip.open if path.suffix == ".gz" else open
    prompts: dict[str, str] = {}
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith(";"):
                continue
            key, sep, text = line.partition(":")
            if not sep:
                continue
            prompts[key.strip()] = text.strip()
    return prompts


def word_count(text: str) -> int:
    return len(text.split())


def build_asterisk(open_set: Callable[[str], Path]) -> None:
    """Download both packages, decode every prompt with a speakable transcript, split by length."""
    with tempfile.TemporaryDirectory(prefix="edgeasr-asterisk-") as tmp:
        work = Path(tmp)
        audio_pkg = download_deb(AUDIO_PACKAGE, work)
        text_pkg = download_deb(TEXT_PACKAGE, work)
        transcripts = [p for p in text_pkg.root.rglob("core-sounds-en.txt*") if p.is_file()]
        if not transcripts:
            raise DatasetError(f"{TEXT_PACKAGE} {text_pkg.version} holds no core-sounds-en.txt: layout changed?")
        # The prompts live in one folder per voice (en_US_f_Allison/); keys may name subfolders.
        anchors = sorted(audio_pkg.root.rglob("hello-world.g722"))
        if len(anchors) != 1:
            raise DatasetError(f"expected one prompt folder in {AUDIO_PACKAGE} {audio_pkg.version}, "
                               f"found {len(anchors)}")
        root = anchors[0].parent
        prompts = parse_transcripts(transcripts[0])
        source = f"{AUDIO_PACKAGE}={audio_pkg.version} ({LICENSE})"

        sets = {EVAL_SET: open_set(EVAL_SET), CALIB_SET: open_set(CALIB_SET)}
        rows: dict[str, list[Utterance]] = {EVAL_SET: [], CALIB_SET: []}
        for key, raw in tqdm(sorted(prompts.items()), desc="asterisk prompts", unit="clip"):
            text = clean_transcript(raw)
            clip = root / f"{key}.g722"
            if text is None or not clip.is_file():
                continue  # a tone/silence, or a transcript line whose audio the package lacks
            name = EVAL_SET if word_count(text) >= MIN_EVAL_WORDS else CALIB_SET
            rel = f"audio/{key}.wav"
            seconds = convert(clip, sets[name] / rel, fmt="g722")
            rows[name].append(Utterance(id=key, audio=rel, text=text, seconds=seconds, source=source))
        for name, utts in rows.items():
            write_manifest(sets[name] / MANIFEST_NAME, utts)
