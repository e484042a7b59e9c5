"""Bring sweep rows counted by early-end detector revision 1 up to revision 2 (`edgeasr.bench.breakdown`).

Revision 2 keeps the smaller of the word and the character count of trailing reference words, so a clip can
only lose an early end it had, never gain one (`trailing_deletions` is at most what revision 1 counted). Per
current row without the field:
- no early-end clip and no loop clip: nothing can change; the row gets the field;
- per-clip errors kept and no loop clip: the clips it ended early are decoded again (the checkpoint is cached,
  decoding is greedy) and their counts replaced; a clip whose revision-1 count the decode does not reproduce
  stops the script (the checkpoint is not the one the row measured);
- otherwise (a loop clip, whose id rows do not keep, or no per-clip errors): the cell is measured again from its
  cached checkpoint and the new row appended (the report takes the latest).
Rows whose checkpoint is not in the cache, or that a superseded revision made, are listed: re-run their grids.
Only the latest row of each measurement is rescored (the report reads no other).

    python scripts/rescore_early_end.py bench/results/heldout.jsonl [--dry-run]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from tqdm import tqdm

from edgeasr.audio import SEGMENTATION_REVISION
from edgeasr.bench.breakdown import (EARLY_END_DETECTOR, EARLY_END_MIN_WORDS, trailing_deletions,
                                     words_after_last_alignment)
from edgeasr.bench.cell import measured_checkpoint, run_cell, subset_manifest
from edgeasr.bench.grid import Cell
from edgeasr.bench.heldout import measurement_identity
from edgeasr.bench.sweep import rewrite_rows
from edgeasr.data.manifest import load_manifest
from edgeasr.engine import Engine
from edgeasr.metrics.wer import normalize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="list what would change, write nothing")
    parser.add_argument("--jobs", type=int, default=2, help="cells measured again at once")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the sweep cells decode (one thread each)
    rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    clips_to_decode: dict[str, list[int]] = defaultdict(list)  # engine target -> rows with early-end clips
    remeasure: list[Cell] = []
    left = []
    latest = set({measurement_identity(row): i for i, row in enumerate(rows) if row.get("status") == "ok"}.values())
    for i, row in enumerate(rows):
        if (i not in latest or row.get("early_end_detector", 1) == EARLY_END_DETECTOR
                or row.get("segmentation", 1) != SEGMENTATION_REVISION):
            continue
        if not row.get("early_end_clips") and not row.get("loop_clips"):
            row["early_end_detector"] = EARLY_END_DETECTOR
            continue
        cell = Cell.from_row(row)
        checkpoint = None if cell.is_fp else measured_checkpoint(row, cell)
        target = row["model"] if cell.is_fp else str(checkpoint) if checkpoint else None
        if target is None:
            left.append(row["cell"])
        elif "clip_errors" in row and not row.get("loop_clips"):
            clips_to_decode[target].append(i)
        else:
            remeasure.append(cell)
    for target, indices in clips_to_decode.items():
        engine = Engine.load(target)
        for i in indices:
            row = rows[i]
            utterances = {u.id: u for u in load_manifest(subset_manifest(Cell.from_row(row)))}
            for clip_id, errors in row["clip_errors"].items():
                if not errors[2]:
                    continue
                utt = utterances[clip_id]
                ref, hyp = normalize(utt.text), normalize(engine.transcribe(utt.audio).text)
                if words_after_last_alignment(ref, hyp) != errors[2]:
                    raise SystemExit(f"{row['cell']} {clip_id}: the decode does not reproduce the row "
                                     f"({words_after_last_alignment(ref, hyp)} vs {errors[2]} words): {hyp!r}")
                now = trailing_deletions(ref, hyp)
                now = now if now >= EARLY_END_MIN_WORDS else 0
                row["early_end_words"] += now - errors[2]
                row["early_end_clips"] -= not now
                print(json.dumps({"cell": row["cell"], "clip": clip_id, "early_end_words": [errors[2], now],
                                  "reference": ref, "hypothesis": hyp}), flush=True)
                errors[2] = now
            row["early_end_detector"] = EARLY_END_DETECTOR
    new_rows = []
    print(json.dumps({"remeasure": [cell.label for cell in remeasure]}), flush=True)
    if not args.dry_run:
        with ProcessPoolExecutor(args.jobs) as pool:  # one thread per cell, as the sweep runs them
            for row in tqdm(pool.map(run_cell, remeasure), total=len(remeasure), desc="remeasure", unit="cell"):
                new_rows.append(row)
                print(json.dumps({"cell": row["cell"], "status": row["status"], "wer": row.get("wer"),
                                  "early_end_words": row.get("early_end_words")}), flush=True)
    for label in left:
        print(json.dumps({"left": label, "why": "superseded method revision, key of an older recipe, or checkpoint "
                                               "not in the cache"}))
    if args.dry_run:
        return
    rewrite_rows(args.results, rows + new_rows, len(rows))


if __name__ == "__main__":
    main()
