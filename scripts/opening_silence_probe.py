"""How much silence at the start of a clip can a model take before it decodes the clip to nothing?

Each clip of a set short enough to stay one segment has its own opening pause (frames below −60 dBFS) cut off
and a pause of each `--pauses` length (digital silence) put in front. It is decoded twice: by the model as it
is (one `backend.run` on the whole clip) and by `Engine.transcribe` (which cuts a long opening pause, see
`edgeasr.audio.split_on_silence`). The rows count the reference words lost after the hypothesis stopped
(trailing deletions) and the clips decoded to less than half their words. One JSON line per model and pause.

    python scripts/opening_silence_probe.py MODEL_OR_CHECKPOINT [...] [--set longform-en] [--pauses 0,1,2,3]
        [--out bench/results/opening-silence.jsonl]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from edgeasr.audio import prepare_audio
from edgeasr.bench.breakdown import trailing_deletions
from edgeasr.data.manifest import load_manifest
from edgeasr.engine import Engine
from edgeasr.metrics.wer import normalize

SILENCE_DBFS = -60.0
FRAME = 480  # 30 ms at 16 kHz


def opening_pause_samples(audio: np.ndarray) -> int:
    """Samples before the first 30 ms frame louder than −60 dBFS."""
    n = audio.size // FRAME
    power_db = 10 * np.log10((audio[:n * FRAME].reshape(n, FRAME) ** 2).mean(1) + 1e-12)
    loud = np.flatnonzero(power_db > SILENCE_DBFS)
    return int(loud[0]) * FRAME if loud.size else audio.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="zoo names or checkpoint directories")
    parser.add_argument("--set", default="longform-en")
    parser.add_argument("--pauses", default="0,0.5,1,1.5,2,3", help="opening pauses to try, seconds")
    parser.add_argument("--out", help="append the summary rows (JSON lines) here")
    args = parser.parse_args()
    pauses = [float(p) for p in args.pauses.split(",")]
    clips = [u for u in load_manifest(args.set) if u.text]
    for model in args.models:
        engine = Engine.load(model)
        backend = engine.backend
        fits = [u for u in clips if u.seconds + max(pauses) <= backend.max_segment_seconds]
        lost = {(p, path): [0, 0] for p in pauses for path in ("model", "engine")}  # words, clips under half
        for utt in fits:
            audio, ref = prepare_audio(utt.audio), normalize(utt.text)
            speech = audio[opening_pause_samples(audio):]
            for pause in pauses:
                padded = np.concatenate([np.zeros(int(pause * 16000), np.float32), speech])
                texts = {"model": backend.detokenize(backend.run(padded)[0].tokens),
                         "engine": engine.transcribe(padded).text}
                for path, text in texts.items():
                    words = trailing_deletions(ref, normalize(text))
                    lost[pause, path][0] += words
                    lost[pause, path][1] += words > len(ref.split()) // 2
        words_total = sum(len(normalize(u.text).split()) for u in fits)
        for (pause, path), (words, emptied) in lost.items():
            row = {"model": model.rstrip("/").rsplit("/", 1)[-1], "set": args.set, "opening_pause_s": pause,
                   "decoded_by": path, "clips": len(fits), "words": words_total, "trailing_deletions": words,
                   "clips_lost": emptied}
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
