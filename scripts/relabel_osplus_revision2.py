"""OS+ revision 2 makes `shift = "never"` the default (issue 19, session 17): relabel the sweep rows revision 1 made.

Revision 2 changed no computation, only which one runs without options, so every revision-1 row is a revision-2
measurement under another label: a revision-1 row with `shift = "never"` is revision 2's default (options {}), a
revision-1 row without options ran the search and is revision 2's `shift = "search"`. Each relabelled row gets the
new options, `method_revision: 2`, the key revision 2 gives its cell (so a resumed sweep does not measure it
again) and a `relabelled` note; other options stay as they were, and so do the options of a refusal.

    python scripts/relabel_osplus_revision2.py bench/results/heldout.jsonl [--dry-run]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgeasr.bench.grid import Cell
from edgeasr.bench.sweep import rewrite_rows
from edgeasr.quant.methods import method_revision

NOTE = "measured by OS+ revision 1 with these options under another label; revision 2 changed only the default shift"


def relabel(row: dict) -> dict | None:
    """The revision-2 form of a revision-1 OS+ row (None for any other row)."""
    if row.get("method") != "osplus" or (row.get("method_revision") or 1) != 1:
        return None
    options = dict(row.get("options") or {})
    if row.get("status") == "ok":  # a refusal (OS+ at A16) does not depend on the shift: it keeps its options
        shift = options.pop("shift", "search")
        if shift != "never":
            options["shift"] = shift
    new = {**row, "options": options, "method_revision": 2, "relabelled": NOTE}
    cell = Cell.from_row(new)
    return {**new, "key": cell.key, "cell": cell.label}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    if method_revision("osplus") != 2:
        raise SystemExit("edgeasr's OS+ is not at revision 2: nothing to relabel to")
    rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    out = []
    for row in rows:
        new = relabel(row)
        if new:
            print(f"{row['cell']} -> {new['cell']} ({new.get('wer')})")
        out.append(new or row)
    if not args.dry_run:
        rewrite_rows(args.results, out, len(rows))


if __name__ == "__main__":
    main()
