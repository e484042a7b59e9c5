"""webrtcvad alone vs webrtcvad + Silero VAD (`VADOptions(kind=...)`): words invented on radio static, WER on speech.

    python -m edgeasr.bench.vad_kinds --model moonshine-tiny

Every clip is streamed through a `StreamingSession` (finals only) once per VAD kind; the finals are what a
user would read. Radio static: codec2's HF-radio recordings without speech (words there are invented).
Speech: clean and noisy sets, corpus WER. Results go to bench/results/vad_kinds.{json,md} with the load
average (no timing is reported).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from tqdm import tqdm

from edgeasr.audio import prepare_audio
from edgeasr.bench.cell import scrub
from edgeasr.stream.vad import VAD_KINDS

STATIC = ("david4", "vk2tpm_004")
"""codec2-calib clips of HF-radio static with no speech."""
SETS = ("moonshine-samples", "asterisk-en", "noisy-en-10db")


def _finals(engine, audio, kind: str) -> str:
    from edgeasr.stream import LineCompleted, SessionOptions, StreamingSession
    from edgeasr.stream.sources import ArraySource
    from edgeasr.stream.vad import VADOptions

    session = StreamingSession(engine, SessionOptions(vad=VADOptions(kind=kind), partials=False))
    events = [e for chunk in ArraySource(audio) for e in session.accept(chunk)] + session.finish()
    return " ".join(e.text for e in events if isinstance(e, LineCompleted) and e.text)


def run(model: str, sets: tuple[str, ...], clips: int) -> dict:
    from edgeasr.data import is_built, load_manifest
    from edgeasr.engine import Engine
    from edgeasr.metrics.wer import corpus_wer

    engine = Engine.load(model)
    report = {"model": model, "load_avg_at_start": os.getloadavg(), "static": [], "sets": []}
    codec2 = {u.id: u for u in load_manifest("codec2-calib")} if is_built("codec2-calib") else {}
    for clip in STATIC:
        if clip in codec2:
            audio = prepare_audio(codec2[clip].audio)
            report["static"].append({"clip": clip, **{kind: _finals(engine, audio, kind) for kind in VAD_KINDS}})
    for name in sets:
        if not is_built(name):
            logging.warning("skipping %s: not built (`edgeasr data build %s`)", name, name)
            continue
        utterances = [u for u in load_manifest(name) if u.text][:clips]
        texts = {kind: [] for kind in VAD_KINDS}
        for utt in tqdm(utterances, desc=name, unit="clip"):
            audio = prepare_audio(utt.audio)
            for kind in VAD_KINDS:
                texts[kind].append(_finals(engine, audio, kind))
        refs = [u.text for u in utterances]
        report["sets"].append({"set": name, "clips": len(refs),
                               **{f"wer_{kind}": corpus_wer(refs, texts[kind]).wer for kind in VAD_KINDS},
                               "clips_differing": sum(a != b for a, b in zip(*texts.values()))})
    report["load_avg_at_end"] = os.getloadavg()
    return report


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "vad_kinds.json").write_text(scrub(json.dumps(report, indent=2, ensure_ascii=False)) + "\n")
    lines = [f"# webrtcvad vs webrtcvad + Silero VAD on {report['model']} (streamed finals)", "",
             "`python -m edgeasr.bench.vad_kinds` — text of the finals on radio static without speech, and corpus "
             f"WER on speech. Load average {report['load_avg_at_start'][0]:.1f} at start (2 shared CPUs); no timing "
             "is reported.", "", "| radio static | " + " | ".join(f"text with {k}" for k in VAD_KINDS) + " |",
             "|---|" + "---|" * len(VAD_KINDS)]
    lines += [f"| {s['clip']} | " + " | ".join(repr(s[k]) for k in VAD_KINDS) + " |" for s in report["static"]]
    lines += ["", "| speech set | clips | " + " | ".join(f"WER {k}" for k in VAD_KINDS) + " | clips whose text differs |",
              "|---|---|" + "---|" * len(VAD_KINDS) + "---|"]
    lines += [f"| {s['set']} | {s['clips']} | " + " | ".join(f"{100 * s[f'wer_{k}']:.2f} %" for k in VAD_KINDS)
              + f" | {s['clips_differing']} |" for s in report["sets"]]
    (out / "vad_kinds.md").write_text(scrub("\n".join(lines)) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgeasr.bench.vad_kinds", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="moonshine-tiny")
    p.add_argument("--set", dest="sets", action="append", help=f"speech set, repeatable (default {', '.join(SETS)})")
    p.add_argument("--clips", type=int, default=30, help="clips of each speech set (default 30)")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    write(run(args.model, tuple(args.sets or SETS), args.clips), args.out)
    print((args.out / "vad_kinds.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
