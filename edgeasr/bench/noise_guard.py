"""What the steady-noise guard (`GuardOptions.min_energy_spread_db`) costs and buys, on one model.

    python -m edgeasr.bench.noise_guard --model moonshine-tiny

Buys: words produced from steady noise and tones without and with the guard. Costs: on real speech
sets, how many segments the guard would skip (measured on every clip, no decode needed: the guard only
ever skips a decode) and corpus WER without / with it on the first `--decode` clips, decoded once with
the guard off (the text with the guard is that text without the skipped segments). Results go to
bench/results/noise_guard.{json,md}, with the load average (timings are not the point here).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgeasr.audio import SAMPLE_RATE, energy_spread_db, prepare_audio, split_on_silence
from edgeasr.bench.cell import scrub

log = logging.getLogger(__name__)
SETS = ("moonshine-samples", "asterisk-en", "noisy-en-10db")


def pink_noise(seconds: float, dbfs: float, seed: int = 0) -> np.ndarray:
    """Noise with power falling as 1/f, scaled to an RMS of `dbfs` relative to full scale."""
    n = int(seconds * SAMPLE_RATE)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    freqs[0] = freqs[1]
    noise = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    return (noise / np.sqrt(np.mean(noise**2)) * 10 ** (dbfs / 20)).astype(np.float32)


def white_noise(seconds: float, dbfs: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE))
    return (noise * 10 ** (dbfs / 20)).astype(np.float32)


def tone(seconds: float, hz: float, dbfs: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (np.sqrt(2) * 10 ** (dbfs / 20) * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@functools.cache
def noises() -> dict[str, np.ndarray]:
    """Issue 21's noise cases plus louder noise and tones; each passes the webrtcvad gate (>= 0.12 s voiced)."""
    return {
        "pink -30 dBFS 60 s": pink_noise(60, -30),
        "pink -30 dBFS 0.5 s": pink_noise(0.5, -30, seed=3),
        "white -30 dBFS 20 s": white_noise(20, -30),
        "white -20 dBFS 10 s": white_noise(10, -20),
        "tone 440 Hz -20 dBFS 10 s": tone(10, 440, -20),
        "tone 200 Hz -30 dBFS 10 s": tone(10, 200, -30),
    }


def _kept(transcript, threshold: float, audio) -> tuple[str, int]:
    """(text with the guard on, segments it skips) from a guard-off transcript of `audio`."""
    kept, skipped = [], 0
    for s in transcript.segments:
        piece = audio[int(s.start * SAMPLE_RATE):int(s.end * SAMPLE_RATE)]
        if s.text and energy_spread_db(piece) < threshold:
            skipped += 1
        elif s.text:
            kept.append(s.text)
    return " ".join(kept), skipped


def _speech_set(engine, name: str, threshold: float, decode: int) -> dict:
    """Guard decisions on every segment of a set (cheap, no decode), and WER without / with the guard on
    its first `decode` utterances."""
    from edgeasr.data import load_manifest
    from edgeasr.metrics.wer import corpus_wer

    utterances = load_manifest(name)
    segments, skipped, lowest = 0, 0, float("inf")
    refs, off, on = [], [], []
    for i, utt in enumerate(tqdm(utterances, desc=name, unit="clip")):
        audio = prepare_audio(utt.audio)
        for start, end in split_on_silence(audio, engine.backend.max_segment_seconds):
            spread = energy_spread_db(audio[start:end])
            segments += 1
            skipped += spread < threshold
            lowest = min(lowest, spread)
        if i < decode and utt.text:
            transcript = engine.transcribe(audio)
            refs.append(utt.text)
            off.append(transcript.text)
            on.append(_kept(transcript, threshold, audio)[0])
    return {"set": name, "utterances": len(utterances), "segments": segments, "segments_skipped": skipped,
            "lowest_spread_db": round(lowest, 2), "decoded": len(refs),
            "wer_off": corpus_wer(refs, off).wer if refs else None, "wer_on": corpus_wer(refs, on).wer if refs else None}


def run(model: str, sets: tuple[str, ...], decode: int) -> dict:
    from edgeasr.data import is_built
    from edgeasr.engine import Engine

    engine = Engine.load(model)
    threshold = engine.guard.min_energy_spread_db
    engine.guard = replace(engine.guard, min_energy_spread_db=float("-inf"))  # guard off: decode everything
    report = {"model": model, "threshold_db": threshold, "load_avg_at_start": os.getloadavg(), "noise": [], "sets": []}
    for name, audio in noises().items():
        transcript = engine.transcribe(audio)
        text, _ = _kept(transcript, threshold, audio)
        report["noise"].append({"case": name, "words_off": len(transcript.text.split()), "words_on": len(text.split()),
                                "text_off": transcript.text, "spread_db": round(energy_spread_db(audio), 2)})
    for name in sets:
        if not is_built(name):
            log.warning("skipping %s: not built (`edgeasr data build %s`)", name, name)
            continue
        report["sets"].append(_speech_set(engine, name, threshold, decode))
    report["load_avg_at_end"] = os.getloadavg()
    return report


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "noise_guard.json").write_text(scrub(json.dumps(report, indent=2)) + "\n")
    lines = [f"# Steady-noise guard on {report['model']} (threshold {report['threshold_db']} dB)", "",
             "`python -m edgeasr.bench.noise_guard` — words from noise and tones, and WER on speech, without / with "
             "the guard (speech-band energy spread, p10→p90 over 20 ms frames; see docs/protocol-reliability.md). "
             f"Load average {report['load_avg_at_start'][0]:.1f} at start (2 shared CPUs); no timing is reported.",
             "", "| input | energy spread dB | words without | words with | text without the guard |",
             "|---|---|---|---|---|"]
    for n in report["noise"]:
        lines.append(f"| {n['case']} | {n['spread_db']} | {n['words_off']} | {n['words_on']} | {n['text_off']!r} |")
    lines += ["", "Speech: the guard's decision on every segment of every clip (it only ever skips a decode, so a set "
              "with 0 skipped segments transcribes identically), and WER without / with it on the first clips.", "",
              "| speech set | clips | segments | skipped by the guard | lowest spread dB | clips decoded | "
              "WER without | WER with |", "|---|---|---|---|---|---|---|---|"]
    pct = lambda x: f"{100 * x:.2f} %" if x is not None else "–"  # noqa: E731
    for s in report["sets"]:
        lines.append(f"| {s['set']} | {s['utterances']} | {s['segments']} | {s['segments_skipped']} | "
                     f"{s['lowest_spread_db']} | {s['decoded']} | {pct(s['wer_off'])} | {pct(s['wer_on'])} |")
    (out / "noise_guard.md").write_text(scrub("\n".join(lines)) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgeasr.bench.noise_guard", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="moonshine-tiny")
    p.add_argument("--set", dest="sets", action="append", help=f"speech set, repeatable (default {', '.join(SETS)})")
    p.add_argument("--decode", type=int, default=40, help="clips of each set decoded for the WER (default 40)")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = run(args.model, tuple(args.sets or SETS), args.decode)
    write(report, args.out)
    print((args.out / "noise_guard.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
