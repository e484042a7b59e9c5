"""Which half of a quantized encoder-decoder makes it end early on long clips?

For each clip of a set at least `--min-seconds` long, transcribe with the quantized checkpoint as it
is, with its encoder swapped for the FP one, and with its decoder swapped for the FP one, and count the
reference words lost after the hypothesis stopped (trailing deletions, `edgeasr.bench.breakdown`).

    python scripts/early_end_probe.py CHECKPOINT [--set longform-en] [--min-seconds 12] [--limit 12] [--match flite]
"""

from __future__ import annotations

import argparse
import contextlib
import json

from edgeasr.bench.breakdown import trailing_deletions
from edgeasr.data.manifest import load_manifest
from edgeasr.engine import Engine
from edgeasr.metrics.wer import normalize
from edgeasr.quant.checkpoint import read_meta


@contextlib.contextmanager
def swapped(quantized: Engine, fp: Engine, part: str):
    """The quantized engine with its `part` ("encoder" or "decoder") replaced by the FP model's."""
    inner_q, inner_fp = quantized.backend.model.model, fp.backend.model.model
    saved = getattr(inner_q, part)
    setattr(inner_q, part, getattr(inner_fp, part))
    try:
        yield quantized
    finally:
        setattr(inner_q, part, saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--model", help="the FP model the checkpoint came from (default: the one its recipe names)")
    parser.add_argument("--set", default="longform-en")
    parser.add_argument("--min-seconds", type=float, default=12.0)
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument("--match", default="", help="only clips whose id contains this (e.g. flite)")
    args = parser.parse_args()
    model = args.model or read_meta(args.checkpoint)["recipe"]["model"]
    quantized, fp = Engine.load(args.checkpoint), Engine.load(model)
    clips = [u for u in load_manifest(args.set) if u.text and u.seconds >= args.min_seconds
             and args.match in u.id][: args.limit]
    totals = {"fp": 0, "quantized": 0, "fp-encoder": 0, "fp-decoder": 0}
    for utt in clips:
        ref = normalize(utt.text)
        lost = {"fp": trailing_deletions(ref, normalize(fp.transcribe(utt.audio).text)),
                "quantized": trailing_deletions(ref, normalize(quantized.transcribe(utt.audio).text))}
        for part in ("encoder", "decoder"):
            with swapped(quantized, fp, part) as hybrid:
                lost[f"fp-{part}"] = trailing_deletions(ref, normalize(hybrid.transcribe(utt.audio).text))
        for key, value in lost.items():
            totals[key] += value
        print(json.dumps({"id": utt.id, "seconds": utt.seconds, "words": len(ref.split()), **lost}), flush=True)
    print(json.dumps({"clips": len(clips), "trailing_deletions": totals}))


if __name__ == "__main__":
    main()
