"""`calib-mix`: the default calibration set, mixing voices, lengths and noise, disjoint from evaluation.

Sources are calibration-only audio: asterisk-en-calib (the studio speaker's 1-2-word prompts),
tts-en-calib (five TTS voices, Harvard lists 5-8) and codec2-calib (real voices over HF radio,
untranscribed, so the decoder is calibrated on the model's own greedy tokens there). Items:

- 20 long asterisk joins and 20 long tts joins (4 per voice) of 5-25 s: long decodes (about 2,000
  decoder rows in all, more than the widest decoder linear's inputs), and the Whisper encoder sees
  speech across its window instead of mostly padding;
- 8 short asterisk pairs and 8 single tts sentences: the short decodes that prompts produce;
- 8 codec2 speech excerpts of up to 20 s;
- every third of the asterisk / tts items with white, pink or radio noise (the codec2 recording
  `david4`, never used for evaluation) at 10-30 dB SNR, and every fifth of the others reverberant.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

import edgeasr.data.effects as effects
from edgeasr.data.derived import by_voice, group_by_length, noise_of, radio_bed, rng_for
from edgeasr.data.manifest import MANIFEST_NAME, Utterance, load_manifest, write_manifest
from edgeasr.data.wavio import write_wav

SET_NAME = "calib-mix"
CALIB_RADIO_NOISE = "david4"
CODEC2_EXCERPT_SECONDS = 20.0
CODEC2_SPEECH = ("ve9qrp", "vk5qi", "speech_orig_16k", "all")
"""codec2-calib recordings that hold speech (the others are noise, modem signals or very short)."""
LONG_ITEMS = 20
"""Long (5-25 s) items from each of asterisk-en-calib and tts-en-calib."""
LONG_PROMPTS = 250
"""asterisk-en-calib prompts the long items are drawn from (the rest make the short pairs)."""
SHORT_ITEMS = 8
"""Short items from each of asterisk-en-calib (prompt pairs) and tts-en-calib (single sentences)."""
CODEC2_ITEMS = 8


def _codec2_excerpts(n: int) -> list[tuple[str, np.ndarray]]:
    """Up to `n` speech excerpts of ≤ 20 s, taken in turn from the codec2 speech recordings."""
    clips = {u.id: u for u in load_manifest("codec2-calib")}
    chunks = int(CODEC2_EXCERPT_SECONDS * effects.RATE)
    pools = []
    for clip_id in CODEC2_SPEECH:
        audio = effects.read_clip(clips[clip_id].audio)
        pools.append([(f"{clip_id}-{k}", audio[s:s + chunks]) for k, s in enumerate(range(0, audio.size, chunks))
                      if audio[s:s + chunks].size >= 3 * effects.RATE])
    excerpts = []
    while len(excerpts) < n and any(pools):
        for pool in pools:
            if pool and len(excerpts) < n:
                excerpts.append(pool.pop(0))
    return excerpts


def build_calib_mix(open_set: Callable[[str], Path]) -> None:
    out = open_set(SET_NAME)
    rng = rng_for(0, salt=7)
    prompts = load_manifest("asterisk-en-calib")
    prompts = [prompts[i] for i in rng.permutation(len(prompts))]
    voices = by_voice(load_manifest("tts-en-calib"))
    for voice in voices:
        voices[voice] = [voices[voice][i] for i in rng.permutation(len(voices[voice]))]

    groups: list[tuple[str, list[Utterance]]] = []
    groups += [("asterisk", g) for g in group_by_length(prompts[:LONG_PROMPTS], rng)[:LONG_ITEMS]]
    names = list(voices)
    for voice in names:  # the last two sentences of each voice are kept for the short items
        groups += [(voice, g) for g in group_by_length(voices[voice][:-2], rng)[:LONG_ITEMS // len(names)]]
    groups += [("asterisk", prompts[LONG_PROMPTS + 2 * k: LONG_PROMPTS + 2 * k + 2]) for k in range(SHORT_ITEMS)]
    groups += [(names[k % len(names)], [voices[names[k % len(names)]][-1 - k // len(names)]])
               for k in range(SHORT_ITEMS)]

    bed = radio_bed(CALIB_RADIO_NOISE)
    rows = []
    for i, (kind, group) in enumerate(tqdm(groups, desc=SET_NAME, unit="item")):
        item_rng = rng_for(i, salt=8)
        audio = effects.join_with_pauses([effects.read_clip(u.audio) for u in group], item_rng)
        condition = "clean"
        if i % 3 == 2:
            noise = ("white", "pink", "radio")[(i // 3) % 3]
            snr = float(item_rng.uniform(10.0, 30.0))
            audio = effects.mix_at_snr(audio, noise_of(noise, audio.size, item_rng, bed), snr)
            condition = f"{noise}{snr:.0f}db"
        elif i % 5 == 4:
            rt60 = float(item_rng.uniform(0.3, 0.8))
            audio = effects.reverberate(audio, effects.room_response(item_rng, rt60, float(item_rng.uniform(0.0, 6.0))))
            condition = f"rt{int(rt60 * 1000)}"
        uid = f"mix{i:02d}-{kind}-{condition}"
        rel = f"audio/{uid}.wav"
        rows.append(Utterance(id=uid, audio=rel, text=" ".join(u.text.strip() for u in group),
                              seconds=write_wav(out / rel, audio), source=" + ".join(u.id for u in group)))
    for j, (excerpt_id, audio) in enumerate(_codec2_excerpts(CODEC2_ITEMS)):
        uid = f"mix{len(groups) + j:02d}-codec2-{excerpt_id}"
        rel = f"audio/{uid}.wav"
        rows.append(Utterance(id=uid, audio=rel, text=None, seconds=write_wav(out / rel, audio),
                              source=f"codec2-calib {excerpt_id}"))
    write_manifest(out / MANIFEST_NAME, rows)
