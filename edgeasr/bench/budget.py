"""A small byte-budget sweep: mixed-precision recipes at budgets between uniform W2 and W4 bundles, against
those uniform recipes, WER on an evenly spread subset of a set (`python -m edgeasr.bench.budget`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from pathlib import Path

from edgeasr.quant.budget import MB, byte_costs
from edgeasr.quant.recipe import CalibrationOptions, Recipe

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SweepOptions:
    """What the sweep covers."""

    model: str = "moonshine-tiny"
    """Zoo model."""
    methods: tuple[str, ...] = ("rtn", "gptq")
    """Base methods quantizing each layer at its chosen bits."""
    points: int = 3
    """Budgets, evenly spaced strictly between the uniform W2 and W4 bundle bytes."""
    dataset: str = "asterisk-en"
    """Evaluation set."""
    limit: int = 50
    """Utterances, evenly spread over the set."""
    estimator: str = "median"
    """Sensitivity estimator."""
    calib_clips: int = 16
    """Calibration sequences of the calibrated methods (calib-mix); sensitivity uses 4 of them."""


def run(options: SweepOptions, out: Path) -> list[dict]:
    from edgeasr.bench.cell import run_cell
    from edgeasr.bench.grid import Cell
    from edgeasr.quant.mixed import BudgetOptions, plan

    calibration = CalibrationOptions("calib-mix", n_clips=options.calib_clips)
    base = Recipe(options.model, "rtn", 4, calibration=dataclasses.replace(calibration, n_clips=4))
    _, _, scores, fixed = plan(base, BudgetOptions(budget_mb=1e6, estimator=options.estimator))
    uniform = {b: fixed + sum(byte_costs(s.layout)[b] for s in scores) for b in (2, 4)}
    step = (uniform[4] - uniform[2]) / (options.points + 1)
    budgets = [(uniform[2] + step * (i + 1)) / MB for i in range(options.points)]
    load = os.getloadavg()
    rows = []
    out.parent.mkdir(parents=True, exist_ok=True)
    for method in options.methods:
        recipe = Recipe(options.model, method, 4, calibration=calibration)
        cells = [(dataclasses.replace(recipe, w_bits=b), "uniform", uniform[b]) for b in (2, 4)]
        for mb in budgets:
            mixed, allocation, _, _ = plan(recipe, BudgetOptions(budget_mb=mb, estimator=options.estimator), scores)
            cells.append((mixed, f"mixed {mb:.2f} MB", allocation.cost + fixed))
        for r, kind, nbytes in cells:
            row = run_cell(Cell(r, options.dataset, options.limit, True), threads=1)
            row.update({"kind": kind, "bundle_bytes_estimate": nbytes, "estimator": options.estimator,
                        "bits_histogram": {str(k): v for k, v in sorted(
                            {b: list(r.layer_bits.values()).count(b) for b in set(r.layer_bits.values())}.items())},
                        "layer_bits": r.layer_bits, "load_avg_at_start": load})
            rows.append(row)
            with out.open("a") as handle:
                handle.write(json.dumps(row, default=str) + "\n")
            log.info("%s %s: WER %s, %.2f MB", method, kind, row.get("wer"), nbytes / MB)
    return rows


def write_report(rows: list[dict], out_dir: Path) -> tuple[Path, Path]:
    """`budget.md` (one line per cell) and `budget.png` (WER against bundle bytes, mixed vs uniform, per method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["| method | recipe (sensitivity) | bundle MB (estimate) | layers at 2/4/8 bits | WER % | status |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        hist = r.get("bits_histogram") or {}
        split = "/".join(str(hist.get(str(b), 0)) for b in (2, 4, 8)) if hist else "uniform"
        kind = f"uniform W{r['w_bits']}" if r["kind"] == "uniform" else f"{r['kind'].split(' (')[0]} ({r['estimator']})"
        lines.append(f"| {r['method']} | {kind} | {r['bundle_bytes_estimate'] / MB:.2f} | {split} | "
                     f"{r.get('wer', '')} | {r['status']} |")
    md = out_dir / "budget.md"
    md.write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(6, 4))
    series = {(r["method"], "uniform" if r["kind"] == "uniform" else f"mixed ({r['estimator']})") for r in rows}
    for method, kind in sorted(series):
        pts = sorted((r["bundle_bytes_estimate"] / MB, r["wer"]) for r in rows if r["method"] == method
                     and (r["kind"] == "uniform") == (kind == "uniform") and r["status"] == "ok"
                     and (kind == "uniform" or r["estimator"] in kind))
        ax.plot(*zip(*pts), marker="s" if kind == "uniform" else "o", linestyle="" if kind == "uniform" else "-",
                label=f"{method} {kind}")
    ax.set_xlabel("bundle MB (10^6 bytes)")
    ax.set_ylabel("WER %")
    ax.set_yscale("log")
    ax.legend()
    png = out_dir / "budget.png"
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return md, png


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default=SweepOptions.model)
    p.add_argument("--methods", nargs="+", default=list(SweepOptions.methods))
    p.add_argument("--out", type=Path, default=Path("bench/results/budget/budget.jsonl"))
    p.add_argument("--estimator", default=SweepOptions.estimator, choices=("hessian", "median"))
    p.add_argument("--report-only", action="store_true", help="only write budget.md / budget.png from --out")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.report_only:
        run(SweepOptions(args.model, tuple(args.methods), estimator=args.estimator), args.out)
    rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    write_report(rows, args.out.parent)


if __name__ == "__main__":
    main()
