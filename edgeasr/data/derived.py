"""Harder evaluation sets derived from the built offline sets: long-form, noisy, reverberant, speed-changed.

Each builder reads its source sets' manifests (built first, see `sets.DEPENDS`), draws every random
choice from a generator seeded with `SEED` and the item's index, and writes 16 kHz PCM16 clips: the
same sources give a bit-identical set. The sources are evaluation clips only (asterisk-en, tts-en);
the noise bed of the noisy sets is a codec2 recording that calibration never uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

import edgeasr.data.effects as effects
from edgeasr.data.manifest import MANIFEST_NAME, Utterance, load_manifest, write_manifest
from edgeasr.data.wavio import write_wav
from edgeasr.errors import DatasetError

SEED = 19
LONG_SECONDS = (5.0, 25.0)
"""Length range of a long-form item; Whisper's window is 30 s."""
MAX_PART_SECONDS = 20.0
"""Source clips longer than this are left out of the derived sets."""
CORE_PER_SOURCE = 24
"""Clips from each of asterisk-en and tts-en in the noisy and reverberant sets."""
EVAL_RADIO_NOISE = "vk2tpm_004"
"""codec2-examples' 35 s of HF-radio static without speech (calibration uses `david4` instead)."""
NOISE_KINDS = ("white", "pink", "radio")
SPEEDS = (0.9, 1.1)


def rng_for(index: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([SEED, salt, index])


def spread(utterances: Sequence[Utterance], n: int) -> list[Utterance]:
    """`n` utterances evenly spaced over the sequence (all of it when it is shorter)."""
    if n >= len(utterances):
        return list(utterances)
    step = len(utterances) / n
    return [utterances[int(i * step)] for i in range(n)]


def usable(name: str) -> list[Utterance]:
    """The labelled clips of a built set that are short enough to join or perturb."""
    return [u for u in load_manifest(name) if u.text and u.seconds <= MAX_PART_SECONDS]


def group_by_length(parts: Sequence[Utterance], rng: np.random.Generator, bounds: tuple[float, float] = LONG_SECONDS,
                    pause: float = 0.6) -> list[list[Utterance]]:
    """Consecutive runs of `parts` whose joined length (with ~`pause` s between parts) reaches a target
    drawn uniformly from `bounds` without passing its upper end; runs that stay short are dropped."""
    groups, current, length = [], [], 0.0
    target = rng.uniform(*bounds)
    for part in parts:
        added = part.seconds + (pause if current else 0.0)
        if current and length + added > bounds[1]:
            if length >= bounds[0]:
                groups.append(current)
            current, length, target = [], 0.0, rng.uniform(*bounds)
            added = part.seconds
        current.append(part)
        length += added
        if length >= target:
            groups.append(current)
            current, length, target = [], 0.0, rng.uniform(*bounds)
    if current and length >= bounds[0]:
        groups.append(current)
    return groups


def join_item(uid: str, group: Sequence[Utterance], rng: np.random.Generator, out: Path, source: str) -> Utterance:
    """Write the clips of `group` joined with natural pauses as one item; its text is theirs in order."""
    audio = effects.join_with_pauses([effects.read_clip(u.audio) for u in group], rng)
    rel = f"audio/{uid}.wav"
    seconds = write_wav(out / rel, audio)
    texts = [u.text for u in group]
    text = " ".join(t.strip() for t in texts) if all(texts) else None
    return Utterance(id=uid, audio=rel, text=text, seconds=seconds, source=f"{source}: {' + '.join(u.id for u in group)}")


def by_voice(utterances: Sequence[Utterance]) -> dict[str, list[Utterance]]:
    """tts clips grouped by voice (their ids are `<voice>-hLL-SS`)."""
    voices: dict[str, list[Utterance]] = {}
    for utt in utterances:
        voices.setdefault(utt.id.rsplit("-", 2)[0], []).append(utt)
    return voices


def build_longform(open_set: Callable[[str], Path]) -> None:
    """`longform-en`: 20 items of asterisk-en prompts and 20 of tts-en sentences (one voice each), 5-25 s."""
    out = open_set("longform-en")
    rng = rng_for(0, salt=1)
    prompts = usable("asterisk-en")
    order = rng.permutation(len(prompts))
    groups = [("asterisk", g) for g in group_by_length([prompts[i] for i in order], rng)[:20]]
    voices = by_voice(usable("tts-en"))
    per_voice = -(-20 // len(voices))
    for voice, clips in voices.items():
        order = rng.permutation(len(clips))
        groups += [(voice, g) for g in group_by_length([clips[i] for i in order], rng)[:per_voice]]
    rows = [join_item(f"long{i:02d}-{kind}", group, rng_for(i, salt=2), out, "joined")
            for i, (kind, group) in enumerate(tqdm(groups[:40], desc="longform-en", unit="item"))]
    write_manifest(out / MANIFEST_NAME, rows)


def core_clips(per_source: int = CORE_PER_SOURCE) -> list[Utterance]:
    """The clips the noisy and reverberant sets perturb: `per_source` evenly spread asterisk-en clips and as many
    tts-en ones (48 in all at the default)."""
    return spread(usable("asterisk-en"), per_source) + spread(usable("tts-en"), per_source)


def perturbed_set(out: Path, name: str, clips: Sequence[Utterance],
                  change: Callable[[int, Utterance, np.ndarray], tuple[str, np.ndarray]]) -> None:
    """Write `change(index, clip, samples) -> (id suffix, new samples)` of every clip as set `name`."""
    rows = []
    for i, utt in enumerate(tqdm(clips, desc=name, unit="clip")):
        suffix, audio = change(i, utt, effects.read_clip(utt.audio))
        uid = f"{utt.id.replace('/', '_')}-{suffix}"
        rel = f"audio/{uid}.wav"
        rows.append(Utterance(id=uid, audio=rel, text=utt.text, seconds=write_wav(out / rel, audio),
                              source=f"{utt.id} ({suffix})"))
    write_manifest(out / MANIFEST_NAME, rows)


def radio_bed(clip_id: str) -> np.ndarray:
    """A codec2-calib recording used as a noise bed."""
    match = [u for u in load_manifest("codec2-calib") if u.id == clip_id]
    if not match:
        raise DatasetError(f"codec2-calib has no clip {clip_id!r}: rebuild it with `edgeasr data build codec2-calib --force`")
    return effects.read_clip(match[0].audio)


def noise_of(kind: str, n: int, rng: np.random.Generator, bed: np.ndarray) -> np.ndarray:
    if kind == "white":
        return effects.white_noise(n, rng)
    if kind == "pink":
        return effects.pink_noise(n, rng)
    return effects.noise_excerpt(bed, n, rng)


def _noisy_builder(snr_db: int) -> Callable[[Callable[[str], Path]], None]:
    name = f"noisy-en-{snr_db}db"

    def build(open_set: Callable[[str], Path]) -> None:
        out = open_set(name)
        bed = radio_bed(EVAL_RADIO_NOISE)

        def change(i: int, _utt: Utterance, audio: np.ndarray) -> tuple[str, np.ndarray]:
            kind = NOISE_KINDS[i % len(NOISE_KINDS)]
            return f"{kind}{snr_db}", effects.mix_at_snr(audio, noise_of(kind, audio.size, rng_for(i, snr_db), bed), snr_db)

        perturbed_set(out, name, core_clips(), change)

    build.__name__ = f"build_noisy_{snr_db}db"
    return build


build_noisy_20db = _noisy_builder(20)
build_noisy_10db = _noisy_builder(10)


def _reverb_builder(name: str, per_source: int) -> Callable[[Callable[[str], Path]], None]:
    def build(open_set: Callable[[str], Path]) -> None:
        """The core clips through a synthetic room (RT60 0.3-0.8 s, direct-to-reverberant 0-6 dB)."""
        out = open_set(name)

        def change(i: int, _utt: Utterance, audio: np.ndarray) -> tuple[str, np.ndarray]:
            rng = rng_for(i, salt=3)
            rt60 = rng.uniform(0.3, 0.8)
            rir = effects.room_response(rng, rt60, drr_db=rng.uniform(0.0, 6.0))
            return f"rt{int(rt60 * 1000)}", effects.reverberate(audio, rir)

        perturbed_set(out, name, core_clips(per_source), change)

    build.__name__ = f"build_{name.replace('-', '_')}"
    return build


build_reverb = _reverb_builder("reverb-en", CORE_PER_SOURCE)
build_reverb_192 = _reverb_builder("reverb-en-192", 4 * CORE_PER_SOURCE)
"""Four times reverb-en's clips: on 48 clips a method and RTN differ by a few words that a paired bootstrap
cannot tell from the choice of clips."""


def build_speed(open_set: Callable[[str], Path]) -> None:
    """`speed-en`: 24 evenly spread asterisk-en prompts, each at 0.9x and at 1.1x, pitch kept."""
    out = open_set("speed-en")
    clips = [u for u in spread(usable("asterisk-en"), CORE_PER_SOURCE) for _ in SPEEDS]

    def change(i: int, _utt: Utterance, audio: np.ndarray) -> tuple[str, np.ndarray]:
        speed = SPEEDS[i % len(SPEEDS)]
        return f"x{speed}", effects.time_stretch(audio, speed)

    perturbed_set(out, "speed-en", clips, change)
