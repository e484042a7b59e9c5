"""Bring sweep rows decoded before segmentation revision 2 up to it: re-score the clips whose opening pause the
engine now cuts (`edgeasr.audio.SEGMENTATION_REVISION`).

Revision 2 changes a clip's decode only when its opening pause is longer than half a second (in the held-out sets:
`long18-asterisk` of longform-en and `demo-moreinfo-rt326` of reverb-en-192). For each row without the field, each
such clip of the row's evaluation subset is decoded as revision 1 did (the raw clip as one segment) and as the
engine does now; the row's counts lose the first decode's contribution and gain the second's (corpus WER and the
breakdown are sums over clips). A row with no such clip only gets the field. Rows whose checkpoint is not in the
cache, whose key no current recipe reproduces, or that a superseded method revision made, stay as they are (the
report leaves them out) and are listed: re-run their grids.

    python scripts/rescore_opening_pause.py bench/results/heldout.jsonl [--dry-run]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

from edgeasr.audio import SEGMENTATION_REVISION, prepare_audio, split_on_silence
from edgeasr.bench.breakdown import breakdown
from edgeasr.bench.cell import measured_checkpoint, subset_manifest
from edgeasr.bench.grid import Cell
from edgeasr.bench.sweep import rewrite_rows
from edgeasr.data.manifest import load_manifest
from edgeasr.engine import Engine
from edgeasr.metrics.wer import corpus_wer, normalize

SEGMENT_SECONDS = {"whisper": 28.0, "moonshine": 20.0}
SUMMED = ("early_end_words", "early_end_clips", "skipped_words", "loop_words", "loop_clips")


@lru_cache(maxsize=None)
def cut_clips(manifest: str, family: str) -> dict[str, tuple[str, object]]:
    """Clips of a manifest whose first piece revision 2 starts after 0: id -> (reference text, samples)."""
    limit = SEGMENT_SECONDS[family]
    out = {}
    for utt in load_manifest(manifest):
        samples = prepare_audio(utt.audio)
        if utt.text and split_on_silence(samples, limit)[0][0] > 0:
            if samples.size > limit * 16000:
                raise SystemExit(f"{utt.id} is longer than one {family} segment: re-run its rows instead")
            out[utt.id] = (utt.text, samples)
    return out


def contribution(text: str, hypothesis: str, seconds: float, dropped: str | None, clip_id: str) -> dict:
    wer = corpus_wer([text], [hypothesis])
    row = {"id": clip_id, "reference_norm": normalize(text), "hypothesis_norm": normalize(hypothesis),
           "audio_seconds": seconds, "last_segment_dropped": dropped}
    return {"substitutions": wer.substitutions, "deletions": wer.deletions, "insertions": wer.insertions,
            **breakdown([row])}


def rescore(row: dict, old: dict, new: dict, clip_id: str) -> None:
    for key in ("substitutions", "deletions", "insertions", *SUMMED):
        if key in row:
            row[key] += new[key] - old[key]
    for bucket in set(old["by_length"]) | set(new["by_length"]):
        if "by_length" in row:
            for field in ("deletions", "errors"):
                row["by_length"][bucket][field] += (new["by_length"].get(bucket, {}).get(field, 0)
                                                    - old["by_length"].get(bucket, {}).get(field, 0))
    if "clip_errors" in row:
        row["clip_errors"][clip_id] = new["clip_errors"][clip_id]
    errors = row["substitutions"] + row["deletions"] + row["insertions"]
    row["wer"] = round(100 * errors / row["reference_words"], 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="list what would change, write nothing")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    todo: dict[str, list[tuple[int, dict]]] = defaultdict(list)  # engine to load -> (row, its clips to re-score)
    left = []
    for i, row in enumerate(rows):
        if row.get("segmentation", 1) == SEGMENTATION_REVISION or row.get("status") != "ok":
            continue
        cell = Cell.from_row(row)
        family = "whisper" if row["model"].startswith("whisper") else "moonshine"
        subset = {u.id for u in load_manifest(subset_manifest(cell))}
        clips = {k: v for k, v in cut_clips(row["dataset"], family).items() if k in subset}
        if not clips:
            row["segmentation"] = SEGMENTATION_REVISION
            continue
        if cell.is_fp:
            todo[row["model"]].append((i, clips))
            continue
        path = measured_checkpoint(row, cell)
        if path is None:
            left.append(row["cell"])
            continue
        todo[str(path)].append((i, clips))
    for target, pending in todo.items():
        engine = Engine.load(target)
        decoded = {}
        for i, clips in pending:
            row = rows[i]
            for clip_id, (text, samples) in clips.items():
                if clip_id not in decoded:
                    segment, _, _ = engine.transcribe_segment(samples)
                    now = engine.transcribe(samples)
                    seconds = samples.size / 16000
                    decoded[clip_id] = (contribution(text, segment.text, seconds, segment.dropped, clip_id),
                                        contribution(text, now.text, seconds, now.segments[-1].dropped, clip_id))
                old, new = decoded[clip_id]
                before = row["wer"]
                rescore(row, old, new, clip_id)
                print(json.dumps({"cell": row["cell"], "key": row["key"], "clip": clip_id,
                                  "wer": [before, row["wer"]]}), flush=True)
            row["segmentation"] = SEGMENTATION_REVISION
            row["rescored_clips"] = sorted(clips)
    for cell_label in left:
        print(json.dumps({"left": cell_label, "why": "superseded method revision, key of an older recipe, or checkpoint not in the cache"}))
    if args.dry_run:
        return
    rewrite_rows(args.results, rows, len(rows))


if __name__ == "__main__":
    main()
