"""The byte-budget sweep: mixed-precision bundles at budgets between the uniform W2 and W4 bundles, against
those uniform bundles, WER on whole sets (`python -m edgeasr.bench.budget`).

Every recipe runs as the board runs it: the resolver quantizes it (checkpoint cache), exports the packed bundle
once (bundle cache), and ONNX Runtime transcribes. The bytes on the x axis are the exported bundle's, every file
(MB = 10^6 bytes). Rows are appended as they finish and a rerun skips the rows already in the file, so a sweep
can be stopped and resumed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
from functools import partial
from pathlib import Path

from edgeasr.metrics.bits import DEFAULT_HEAD_BLOCK
from edgeasr.quant.budget import ESTIMATORS, MB, byte_costs
from edgeasr.quant.method_swap import uniform_recipe
from edgeasr.quant.recipe import CalibrationOptions, Recipe, parse_group_at, parse_option

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
    avg_bits: tuple[float, ...] = ()
    """Mixed targets in effective bits per weight (`--avg-bits`) instead of the evenly spaced byte budgets:
    the issue's 3.0-bit goal is stated in these."""
    datasets: tuple[str, ...] = ("asterisk-en", "tts-en")
    """Evaluation sets, always whole."""
    estimator: str = "kl"
    """Sensitivity estimator (`quant.sensitivity.ESTIMATORS`)."""
    calib_clips: int = 16
    """Calibration sequences of the calibrated base methods (calib-mix)."""
    sensitivity_clips: int = 8
    """Calibration sequences the sensitivity is scored on (calib-mix, transcripts dropped)."""
    group_size_at: tuple[tuple[int, int], ...] = ()
    """(bits, group size) pairs: the group size of the layers at those bits (`Recipe.group_size_at`), e.g.
    ((2, 32),) to give 2-bit layers smaller groups than the recipe's 64; applies to the uniform cells too."""
    method_options: tuple[tuple[str, object], ...] = ()
    """(key, value) options of the base methods (`quantize --option`), e.g. (("clip_grid", 20),); rows and
    plot series carry them in their method label."""
    uniform: tuple[int, ...] = (4, 2)
    """Uniform bundles of each method to run besides the mixed ones (W4 first, W2 after all the mixed ones)."""
    threads: int = 2
    """ONNX Runtime intra-op threads of the evaluation."""
    head_group_size: int = DEFAULT_HEAD_BLOCK
    """Columns per scale of the bundles' 4-bit head; another value is a series of its own ("head g32" in the kind)."""


def sensitivity_calibration(options: SweepOptions) -> CalibrationOptions:
    return CalibrationOptions("calib-mix", n_clips=options.sensitivity_clips, max_decoder_tokens=64)


def bundle_bytes(bundle: Path) -> int:
    """Every file of the bundle, the card and bundle.json included."""
    return sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())


def method_label(method: str, options: dict, calib_clips: int = SweepOptions.calib_clips) -> str:
    """`gptq`, `gptq clip_grid=20` or `gptq calib=64`: a base method with non-default options or calibration size
    is a series of its own."""
    calibration = [f"calib={calib_clips}"] if calib_clips != SweepOptions.calib_clips else []
    return " ".join([method] + [f"{k}={v}" for k, v in sorted(options.items())] + calibration)


def row_method(row: dict) -> str:
    return method_label(row["method"], row.get("options") or {}, row["calibration"]["n_clips"])


def _done(out: Path) -> set[tuple]:
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []
    return {(r["model"], row_method(r), r["kind"], r.get("estimator"), r["dataset"]) for r in rows}


def effective_bits(recipe: Recipe, scores) -> float:
    """Effective bits per weight over the quantized linears (codes, scales, zero points: `metrics.bits`)."""
    from edgeasr.metrics.bits import layer_bits
    from edgeasr.quant.budget import at_width

    total = sum(layer_bits(at_width(s.layout, recipe.layer_bits.get(s.path, recipe.w_bits), recipe.group_size_at)).total
                for s in scores)
    return round(total / sum(s.layout.weights for s in scores), 3)


def plan_cells(options: SweepOptions) -> list[tuple[Recipe, str, str | None, float | None, float]]:
    """(recipe, kind, estimator, budget MB, effective bits) of every cell: uniform W2/W4 and the mixed budgets
    per method."""
    from edgeasr.quant.mixed import BudgetOptions, plan

    calibration = CalibrationOptions("calib-mix", n_clips=options.calib_clips)
    groups = dict(options.group_size_at)
    grids = "".join(f" (W{b} g{g})" for b, g in sorted(groups.items()))  # in the kind: rows stay apart
    head = f" head g{options.head_group_size}" if options.head_group_size != DEFAULT_HEAD_BLOCK else ""

    def recipe_of(method: str) -> Recipe:
        return Recipe(options.model, method, 4, calibration=calibration, group_size_at=groups,
                      options=dict(options.method_options))

    def scoring_recipe(method: str) -> Recipe:
        # `method` scores the method's own models (its calibration); the others score rounding on a few clips,
        # one scoring for every method
        if options.estimator == "method":
            return recipe_of(method)
        return dataclasses.replace(recipe_of(method), calibration=sensitivity_calibration(options))

    def scores_of(method: str):
        """(scores, fixed bytes) of the method's scoring recipe; an unbounded budget only scores and costs."""
        unbounded = BudgetOptions(budget_mb=1e6, estimator=options.estimator, head_group_size=options.head_group_size)
        return plan(scoring_recipe(method), unbounded)[2:]

    scores, fixed = scores_of(options.methods[0])
    uniform = {b: fixed + sum(byte_costs(s.layout, group_at=groups)[b] for s in scores) for b in (2, 4)}
    step = (uniform[4] - uniform[2]) / (options.points + 1)
    budgets = [round((uniform[2] + step * (i + 1)) / MB, 2) for i in range(options.points)]
    targets = ([BudgetOptions(avg_bits=b, estimator=options.estimator) for b in sorted(options.avg_bits, reverse=True)]
               if options.avg_bits else
               [BudgetOptions(budget_mb=mb, estimator=options.estimator, head_group_size=options.head_group_size)
                for mb in reversed(budgets)])
    cells, lowest = [], []
    for method in options.methods:
        recipe = recipe_of(method)
        if options.estimator == "method" and method != options.methods[0]:
            scores, _ = scores_of(method)
        for bits in options.uniform:  # W2 last: every method breaks there (bench/results/full.jsonl), W4 is the bar
            flat = uniform_recipe(recipe, bits)  # uniform W4 stays the plain W4 recipe (and its cached checkpoint)
            group = f" g{groups[bits]}" if bits in groups else ""
            cell = (flat, f"uniform W{bits}{group}{head}", None, None, effective_bits(flat, scores))
            (cells if bits >= 4 else lowest).append(cell)
        for target in targets:  # the largest first: the closest to uniform W4
            mixed, _, _, _ = plan(scoring_recipe(method), target, scores)  # scored once per model (and method)
            mixed = dataclasses.replace(mixed, calibration=calibration)
            kind = (f"mixed {target.budget_mb:.2f} MB" if target.budget_mb is not None
                    else f"mixed {target.avg_bits:.2f} bits") + grids + head
            cells.append((mixed, kind, options.estimator, target.budget_mb, effective_bits(mixed, scores)))
    return cells + lowest


def run(options: SweepOptions, out: Path) -> None:
    from edgeasr.evaluate import evaluate
    from edgeasr.resolver import ResolveOptions, bundle_path, resolve
    from edgeasr.runtime.bundle import read_bundle

    out.parent.mkdir(parents=True, exist_ok=True)
    cells = plan_cells(options)
    done = _done(out)
    for i, (recipe, kind, estimator, mb, effective) in enumerate(cells):
        method = method_label(recipe.method, recipe.options, recipe.calibration.n_clips)
        todo = [d for d in options.datasets if (recipe.model, method, kind, estimator, d) not in done]
        if not todo:
            continue
        resolve_options = ResolveOptions(engine="bundle", threads=options.threads, head_group_size=options.head_group_size)
        head_suffix = f"-headg{options.head_group_size}" if options.head_group_size != DEFAULT_HEAD_BLOCK else ""
        bundle = bundle_path(recipe, resolve_options)
        sizes = read_bundle(bundle).data["sizes"]
        engine = resolve(bundle, resolve_options)
        bits = list(recipe.layer_bits.values())
        for dataset in todo:
            load = os.getloadavg()
            # per-utterance rows kept, so a subset's WER (e.g. the 50-utterance spread) can be read off later
            # named as the checkpoint (a calibration of its own) and the bundle (a head grid of its own) are
            utterances = out.parent / "utterances" / f"{recipe.cache_name}{head_suffix}-{dataset}.jsonl"
            utterances.parent.mkdir(exist_ok=True)
            report = evaluate(engine, dataset, rows_path=utterances, progress=True)
            row = {"model": recipe.model, "method": recipe.method, "options": recipe.options, "kind": kind,
                   "estimator": estimator,
                   # measured on the exported layers (what the method kept: AWQ's and QuaRot's input vectors
                   # too); the plan's count is kept beside it
                   "budget_mb": mb, "effective_bits": sizes["effective_bits"], "planned_bits": effective,
                   "dataset": dataset, "wer": round(100 * report.wer.wer, 3),
                   "utterances": report.wer.utterances, "reference_words": report.wer.reference_words,
                   "bundle_bytes": bundle_bytes(bundle), "bundle_bytes_without_meta": sizes["total_bytes_without_meta"],
                   "bits_histogram": {str(b): bits.count(b) for b in sorted(set(bits))},
                   "head_group_size": options.head_group_size,
                   "layer_bits": recipe.layer_bits, "group_size_at": {str(b): g for b, g in recipe.group_size_at.items()},
                   "label": recipe.label, "engine": "bundle",
                   "sensitivity_clips": options.sensitivity_clips if estimator else None,
                   "calibration": dataclasses.asdict(recipe.calibration),
                   "audio_seconds": round(report.audio_seconds, 1), "compute_seconds": round(report.compute_seconds, 1),
                   "load_avg_at_start": [round(x, 2) for x in load]}
            with out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            log.info("[%d/%d] %s %s %s on %s: WER %.2f, %.3f MB", i + 1, len(cells), recipe.model, method,
                     kind, dataset, row["wer"], row["bundle_bytes"] / MB)


FP_SUMMARY = Path("bench/results/fp_eval/summary.txt")
"""`edgeasr eval` of the FP models on the whole sets (torch): the FP reference line of the report."""


def fp_wer(summary: Path = FP_SUMMARY) -> dict[tuple[str, str], float]:
    """(model, dataset) → FP WER % from the FP evaluation summary, when it is there."""
    found = re.findall(r"^(\S+) on (\S+): WER ([0-9.]+)%", summary.read_text(), re.M) if summary.exists() else []
    return {(model, dataset): float(wer) for model, dataset, wer in found}


def series_of(row_key: tuple) -> str:
    """The plot series of a bundle: all uniform recipes of a method form one; mixed ones split by estimator and
    by the group sizes of their widths (the part of the kind after the budget, e.g. "(W2 g32)")."""
    _, method, kind, estimator = row_key
    if estimator is None:  # a head grid of their own ("head g32") makes another series
        return f"{method} uniform" + (" head " + kind.split(" head ", 1)[1] if " head " in kind else "")
    grids = kind.split(" bits", 1)[-1] if " bits" in kind else kind.split(" MB", 1)[-1]
    return f"{method} mixed ({estimator}){grids}"


def _front_panel(ax, bundles: dict[tuple, dict], model: str, dataset: str) -> None:
    """The best bundle at each size, mixed against uniform: the issue's claim is that one front lies below the other."""
    from edgeasr.bench.plots import pareto_front

    for mixed, colour in ((False, "tab:grey"), (True, "tab:blue")):
        pts = [(b["bytes"] / MB, b[dataset]) for k, b in bundles.items()
               if k[0] == model and dataset in b and (k[3] is not None) == mixed]
        front = pareto_front(pts)
        if not front:
            continue
        label = "mixed (any method, any order)" if mixed else "uniform (any method)"
        ax.scatter(*zip(*pts), s=10, color=colour, alpha=0.3)
        ax.step(*zip(*front), where="post", marker="o" if mixed else "s", color=colour, label=label)


def write_report(rows: list[dict], out_dir: Path, stem: str = "sweep") -> tuple[Path, Path]:
    """`<stem>.md` (one line per bundle, WER per set, FP first), `<stem>.png` (WER against bundle bytes,
    uniform and mixed series, FP as a line, one panel per model and set) and `<stem>-front.png` (the same panels
    with only the two fronts: the best uniform and the best mixed bundle at each size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgeasr.bench.layer_map import plot_layer_maps

    datasets = sorted({r["dataset"] for r in rows})
    models = sorted({r["model"] for r in rows})
    fp = fp_wer()
    bundles: dict[tuple, dict] = {}
    for r in rows:
        bundles.setdefault((r["model"], row_method(r), r["kind"], r["estimator"]), {}).update(
            {"bytes": r["bundle_bytes"], "hist": r["bits_histogram"], "bits": r.get("effective_bits"),
             "layer_bits": r["layer_bits"], r["dataset"]: r["wer"]})
    lines = ["| model | method | recipe | effective bits | bundle MB | layers at 2/4/8 bits | "
             + " | ".join(f"WER % {d}" for d in datasets) + " |", "|---|---|---|---|---|---|" + "---|" * len(datasets)]
    for model in models:
        if any((model, d) in fp for d in datasets):
            lines.append(f"| {model} | FP | | 32 | | | " + " | ".join(str(fp.get((model, d), "")) for d in datasets) + " |")
        mine = sorted(((k, b) for k, b in bundles.items() if k[0] == model), key=lambda kv: (kv[0][1], -kv[1]["bytes"]))
        for (_, method, kind, estimator), b in mine:
            split = "/".join(str(b["hist"].get(str(w), 0)) for w in (2, 4, 8)) if b["hist"] else "uniform"
            recipe = kind if estimator is None else f"{kind} ({estimator})"
            lines.append(f"| {model} | {method} | {recipe} | {b['bits'] or ''} | {b['bytes'] / MB:.3f} | {split} | "
                         + " | ".join(str(b.get(d, "")) for d in datasets) + " |")
    md = out_dir / f"{stem}.md"
    md.write_text("\n".join(lines) + "\n")
    def series_panel(ax, model: str, dataset: str) -> None:
        for series in sorted({series_of(k) for k in bundles if k[0] == model}):
            pts = sorted((b["bytes"] / MB, b[dataset]) for k, b in bundles.items()
                         if k[0] == model and series_of(k) == series and dataset in b)
            uniform = series.endswith("uniform")
            ax.plot(*zip(*pts), marker="s" if uniform else "o", linestyle=":" if uniform else "-", label=series)

    png = out_dir / f"{stem}.png"
    for panel, path, legend in ((series_panel, png, dict(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))),
                                (partial(_front_panel, bundles=bundles), out_dir / f"{stem}-front.png",
                                 dict(fontsize=7))):
        fig, axes = plt.subplots(len(models), len(datasets), figsize=(8.5 * len(datasets), 3.8 * len(models)),
                                 squeeze=False)
        for row_axes, model in zip(axes, models):
            for ax, dataset in zip(row_axes, datasets):
                panel(ax, model=model, dataset=dataset)
                if (model, dataset) in fp:
                    ax.axhline(fp[(model, dataset)], color="grey", linewidth=0.8, label="FP")
                ax.set_title(f"{model} on {dataset}")
                ax.set_xlabel("bundle MB (10^6 bytes, every file)")
                ax.set_ylabel("WER %")
                ax.set_yscale("log")
                ax.legend(**legend)  # the series plot's beside the panel: its series are many
        fig.tight_layout()
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
    maps = [best_at_three_bits(bundles, model, datasets) for model in models]
    if any(maps):
        plot_layer_maps([m for m in maps if m], out_dir / f"{stem}-layers.png")
    return md, png


def best_at_three_bits(bundles: dict[tuple, dict], model: str, datasets: list[str]) -> tuple[str, dict] | None:
    """(title, layer_bits) of the model's mixed bundle at ≤ 3.0 effective bits (+0.05 of rounding) with the lowest
    mean WER over the sets (in their order in the title), among those measured on all of them."""
    candidates = [(sum(b[d] for d in datasets) / len(datasets), k, b) for k, b in bundles.items()
                  if k[0] == model and k[3] is not None and b["bits"] and b["bits"] <= 3.05
                  and all(d in b for d in datasets)]
    if not candidates:
        return None
    _, (_, method, kind, estimator), b = min(candidates, key=lambda c: c[0])
    wers = " / ".join(f"{b[d]:.2f}" for d in datasets)
    base = method.split()[0]  # the series label's options are in sweep.md; the title must fit over one panel
    return f"{model}, {base}, {estimator} order, {b['bits']:.2f} bits, WER {wers} %", b["layer_bits"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default=SweepOptions.model)
    p.add_argument("--methods", nargs="+", default=list(SweepOptions.methods))
    p.add_argument("--points", type=int, default=SweepOptions.points)
    p.add_argument("--avg-bits", type=float, nargs="+", default=[],
                   help="mixed targets in effective bits per weight instead of --points byte budgets")
    p.add_argument("--datasets", nargs="+", default=list(SweepOptions.datasets))
    p.add_argument("--estimator", default=SweepOptions.estimator, choices=ESTIMATORS)
    p.add_argument("--group-at", nargs="*", default=[], metavar="BITS=GROUP", type=parse_group_at,
                   help="group size of the layers at BITS, e.g. 2=32 (Recipe.group_size_at); uniform cells too")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", type=parse_option,
                   help="option of the base methods (repeatable), e.g. clip_grid=20")
    p.add_argument("--calib-clips", type=int, default=SweepOptions.calib_clips,
                   help="calibration sequences of the calibrated base methods (calib-mix)")
    p.add_argument("--head-group", type=int, default=SweepOptions.head_group_size,
                   help="columns per scale of the bundles' 4-bit head")
    p.add_argument("--uniform", type=int, nargs="*", default=list(SweepOptions.uniform),
                   help="uniform widths to run besides the mixed bundles (none: only the mixed ones)")
    p.add_argument("--out", type=Path, default=Path("bench/results/budget/sweep.jsonl"))
    p.add_argument("--report-only", action="store_true", help="only write the .md / .png from --out")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.report_only:
        run(SweepOptions(model=args.model, methods=tuple(args.methods), points=args.points,
                         avg_bits=tuple(args.avg_bits), datasets=tuple(args.datasets), estimator=args.estimator,
                         group_size_at=tuple(args.group_at), method_options=tuple(args.option),
                         uniform=tuple(args.uniform), calib_clips=args.calib_clips,
                         head_group_size=args.head_group), args.out)
    rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    write_report(rows, args.out.parent, args.out.stem)


if __name__ == "__main__":
    main()
