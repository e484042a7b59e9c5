"""How well Smart Turn separates a sentence's end from a pause inside it, at several pause lengths.

`edgeasr bench stream --end-of-turn smart` reports what one policy does; this shows why no threshold does
better on our replays. For every sentence of `edgeasr.bench.turn.build_replay` (the tuning clips by default,
`skip=24`), the line's audio is cut at two points: its last voiced frame (a sentence end) and, in the
sentences that have one, the last voiced frame before the inserted mid-sentence pause. Each cut is scored
after 30-300 ms of silence, and the text gate (the model's final of the same audio closes a sentence)
is evaluated on it. Per rule (a threshold on the score at one pause, or on the mean / minimum of two
scores), the table counts mid-sentence pauses that would end the line (cuts) and sentence ends that would
end early; a median end-of-speech → final under 300 ms needs more than half of the sentence ends early.

    python -m edgeasr.bench.turn_scores [--skip 24 --count 48] [--model moonshine-tiny:rtn:4]
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeasr.audio import SAMPLE_RATE
from edgeasr.bench.cell import scrub

log = logging.getLogger(__name__)

PAUSES_MS = (30, 90, 150, 210, 300)
THRESHOLDS = (0.8, 0.85, 0.9, 0.93, 0.95, 0.97)


@dataclass
class Cut:
    kind: str
    """"end" (the sentence's last voiced frame) or "mid" (the last voiced frame before its inserted pause)."""
    scores: list[float]
    """P(turn complete) after each of `PAUSES_MS` of silence."""
    closes: bool
    """The model's final of the same audio ends with . ? or ! (the session's text gate)."""
    text: str


def collect(model: str, skip: int, count: int) -> list[Cut]:
    from tqdm import tqdm

    from edgeasr.bench.turn import build_replay, last_voiced_end
    from edgeasr.resolver import parse_target, resolve
    from edgeasr.stream.turn import TurnOptions, closes_sentence, load_turn_model
    from edgeasr.stream.session import SessionOptions

    audio, sentences = build_replay(count, skip=skip)
    turn = load_turn_model(TurnOptions(mode="smart"))
    if turn is None:
        raise SystemExit("Smart Turn could not be loaded (see the warning above)")
    engine = resolve(parse_target(model))
    pad = np.zeros(SessionOptions.final_pad_ms * SAMPLE_RATE // 1000, np.float32)
    cuts = []
    for s in tqdm(sentences, desc="sentences", unit="sentence"):
        clip = audio[int(s.start * SAMPLE_RATE):int(s.end * SAMPLE_RATE)]
        points = [("end", last_voiced_end(clip))]
        if s.pause > 0:
            points.append(("mid", last_voiced_end(clip, int((s.pause_start - s.start) * SAMPLE_RATE) + 1)))
        for kind, end in points:
            scores = [turn.score(np.concatenate([clip[:end], np.zeros(ms * SAMPLE_RATE // 1000, np.float32)]))
                      for ms in PAUSES_MS]
            text = engine.transcribe(np.concatenate([clip[:end], pad])).text
            cuts.append(Cut(kind, [round(x, 4) for x in scores], closes_sentence(text), text))
    return cuts


def rules() -> dict[str, Callable[[list[float]], bool]]:
    """Early-end rules over the scores at `PAUSES_MS` (index 0 = 30 ms)."""
    out = {}
    for t in THRESHOLDS:
        for j, ms in enumerate(PAUSES_MS):
            out[f"score at {ms} ms ≥ {t}"] = lambda p, t=t, j=j: p[j] >= t
        for j, ms in list(enumerate(PAUSES_MS))[1:4]:
            out[f"mean of 30 and {ms} ms ≥ {t}"] = lambda p, t=t, j=j: (p[0] + p[j]) / 2 >= t
            out[f"min of 30 and {ms} ms ≥ {t}"] = lambda p, t=t, j=j: min(p[0], p[j]) >= t
    return out


def tally(cuts: list[Cut]) -> list[dict]:
    mids, ends = [c for c in cuts if c.kind == "mid"], [c for c in cuts if c.kind == "end"]
    rows = []
    for name, rule in rules().items():
        rows.append({"rule": name, "mid_cuts": sum(c.closes and rule(c.scores) for c in mids), "mids": len(mids),
                     "early_ends": sum(c.closes and rule(c.scores) for c in ends), "ends": len(ends)})
    return rows


def markdown(report: dict) -> str:
    rows = report["rules"]
    best = {}
    for r in rows:  # per number of cuts, the rule that ends the most sentences early
        if r["mid_cuts"] not in best or r["early_ends"] > best[r["mid_cuts"]]["early_ends"]:
            best[r["mid_cuts"]] = r
    o = report["options"]
    lines = ["# Smart Turn: sentence ends vs mid-sentence pauses", "",
             f"`python -m edgeasr.bench.turn_scores --skip {o['skip']} --count {o['count']} --model {o['model']}`: "
             f"{o['count']} sentences of the end-of-turn replay (clips {o['skip'] + 1}-{o['skip'] + o['count']}), "
             "scored after each pause length, text gate from the model's final. An early end needs the rule and the "
             "text gate; a median under 300 ms needs more than half of the sentence ends early.", "",
             "Most sentence ends early at each number of mid-sentence cuts:", "",
             "| mid-sentence cuts | rule | sentence ends early |", "|---|---|---|"]
    for k in sorted(best):
        r = best[k]
        lines.append(f"| {k} / {r['mids']} | {r['rule']} | {r['early_ends']} / {r['ends']} |")
    lines += ["", "Scores per cut (P at " + " / ".join(f"{ms}" for ms in PAUSES_MS) + " ms of pause):", "",
              "| kind | scores | text gate | final (end) |", "|---|---|---|---|"]
    for c in report["cuts"]:
        lines.append(f"| {c['kind']} | {' / '.join(f'{x:.3f}' for x in c['scores'])} | "
                     f"{'closes' if c['closes'] else 'open'} | {c['text'][-48:]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip", type=int, default=24, help="clips left out first (24: the tuning clips)")
    p.add_argument("--count", type=int, default=48, help="sentences")
    p.add_argument("--model", default="moonshine-tiny:rtn:4", help="engine whose finals drive the text gate")
    p.add_argument("--out", type=Path, default=Path("bench/results/turn-scores"), help="folder for the results")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cuts = collect(args.model, args.skip, args.count)
    report = {"options": {"skip": args.skip, "count": args.count, "model": args.model, "pauses_ms": PAUSES_MS},
              "cuts": [c.__dict__ for c in cuts], "rules": tally(cuts)}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"turn-scores-{args.skip + 1}-{args.skip + args.count}"
    (args.out / f"{stem}.json").write_text(scrub(json.dumps(report, indent=2)) + "\n")
    (args.out / f"{stem}.md").write_text(scrub(markdown(report)))
    print((args.out / f"{stem}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
