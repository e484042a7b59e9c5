"""Tables of the held-out study (issue 19) from a sweep results file: `python -m edgeasr.bench.heldout`.

Views of the same rows: words lost to an early end of text by method and calibration (the long-clip
failure), WER by calibration set × evaluation set (how much a method depends on its calibration domain),
per model the FP / per-method WER on each set with the best W4 and W3, and for rows that keep their
per-clip errors each method against RTN on the same clips (paired bootstrap) and the early
ends that the FP model does not make itself. Rows a superseded revision of a method made are left out.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from edgeasr.audio import SEGMENTATION_REVISION
from edgeasr.bench.breakdown import EARLY_END_DETECTOR, LENGTH_BUCKETS, bucket_label
from edgeasr.metrics.paired import paired_bootstrap
from edgeasr.quant.methods import get_method, made_by_current_revision

BASELINES = ("fp", "rtn")


def calibrated(row: dict) -> bool:
    """Whether the row's method, with its options, read calibration audio (QuaRot only with GPTQ weights)."""
    return row["method"] not in BASELINES and get_method(row["method"]).uses_calibration(row.get("options") or {})


def method_label(row: dict) -> str:
    """`quarot weight_method=gptq`: the method with the options its row set (two settings are two columns)."""
    return " ".join([row["method"]] + [f"{k}={v}" for k, v in sorted((row.get("options") or {}).items())])


def calibration_label(row: dict) -> str:
    """`calib-mix 32x1 t128`: set, sequences x utterances per sequence, decoder positions, and the sampling seed
    when it is not the default 0 (`seed 1`: another draw of the same set, not the study's recipe)."""
    cal = row.get("calibration")
    if not cal or not calibrated(row):
        return "-"
    seed = f" seed {cal['seed']}" if cal.get("seed") else ""
    return f"{cal['dataset']} {cal['n_clips']}x{cal['concat']} t{cal['max_decoder_tokens']}{seed}"


def measurement_identity(row: dict) -> tuple:
    """What a row measured, independent of the cell key (which changes when `Recipe` gains a field)."""
    return (row["model"], row["method"], row["bits"], row.get("group_size"), row["dataset"], row.get("limit"),
            row.get("spread"), calibration_label(row), json.dumps(row.get("options") or {}, sort_keys=True))


def _ok(rows: list[dict]) -> list[dict]:
    """The latest successful row of each measurement, leaving out those a superseded revision of the method made,
    an earlier segmentation decoded or an earlier early-end detector counted (a row without the field predates
    revisions: 1)."""
    latest: dict[tuple, dict] = {}
    for row in rows:
        if (row.get("status") == "ok" and made_by_current_revision(row["method"], row)
                and row.get("segmentation", 1) == SEGMENTATION_REVISION
                and row.get("early_end_detector", 1) == EARLY_END_DETECTOR):
            latest[measurement_identity(row)] = row  # a re-run of the same measurement replaces the older row
    return list(latest.values())


def _bits(row: dict) -> str:
    eff = row.get("effective_bits")
    return f"{eff:.2f}" if isinstance(eff, (int, float)) else "-"


def early_end_table(rows: list[dict], dataset: str = "longform-en") -> str:
    """Per method and calibration on `dataset`: WER, deletions by clip length, words lost to an early end."""
    buckets = [bucket_label(*b) for b in LENGTH_BUCKETS]
    picked = sorted((r for r in rows if r["dataset"] == dataset and r["bits"] in ("fp", "w4a16", "w3a16")),
                    key=lambda r: (r["model"], r["bits"] != "fp", r["bits"], calibration_label(r), method_label(r)))
    if not picked:
        return ""
    head = ["model", "method", "bits", "calibration", "WER %", "deletions"] + [f"del {b}" for b in buckets]
    head += ["early-end words (clips)", "words lost to a dropped loop (clips)", "words in skipped runs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in picked:
        by_length = r.get("by_length", {})
        cells = [f"{by_length[b]['deletions']}/{by_length[b]['words']}" if b in by_length else "" for b in buckets]
        lines.append("| " + " | ".join([r["model"], method_label(r), r["bits"], calibration_label(r), f"{r['wer']:.2f}",
                                        str(r["deletions"])] + cells
                                       + [f"{r.get('early_end_words', '?')} ({r.get('early_end_clips', '?')})",
                                          f"{r.get('loop_words', '?')} ({r.get('loop_clips', '?')})",
                                          str(r.get("skipped_words", "?"))]) + " |")
    return "\n".join(lines)


def cross_domain_table(rows: list[dict], model: str, bits: str = "w4a16") -> str:
    """WER per (method, calibration) × evaluation set, and per method the spread over calibrations."""
    sets = sorted({r["dataset"] for r in rows if r["model"] == model and r.get("calibration")})
    fp = {r["dataset"]: r["wer"] for r in rows if r["model"] == model and r["bits"] == "fp"}
    rtn = {r["dataset"]: r["wer"] for r in rows if r["model"] == model and r["method"] == "rtn" and r["bits"] == bits}
    table: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for r in rows:
        if r["model"] == model and r["bits"] == bits and calibrated(r):
            table[(method_label(r), calibration_label(r))][r["dataset"]] = r["wer"]
    if not table:
        return ""
    lines = ["| method | calibration | " + " | ".join(sets) + " |", "|---|---|" + "---|" * len(sets)]
    lines.append("| FP | - | " + " | ".join(f"{fp[s]:.2f}" if s in fp else "" for s in sets) + " |")
    lines.append("| RTN | - | " + " | ".join(f"{rtn[s]:.2f}" if s in rtn else "" for s in sets) + " |")
    for (method, cal), wers in sorted(table.items()):
        lines.append(f"| {method} | {cal} | " + " | ".join(f"{wers[s]:.2f}" if s in wers else "" for s in sets) + " |")
    lines += ["", "Spread over calibration sets (max - min WER, points), per evaluation set:", "",
              "| method | " + " | ".join(sets) + " | mean |", "|---|" + "---|" * (len(sets) + 1)]
    for method in sorted({m for m, _ in table}):
        spreads = []
        for s in sets:
            values = [w[s] for (m, _), w in table.items() if m == method and s in w]
            spreads.append(max(values) - min(values) if len(values) > 1 else None)
        known = [v for v in spreads if v is not None]
        lines.append(f"| {method} | " + " | ".join("" if v is None else f"{v:.2f}" for v in spreads)
                     + f" | {sum(known) / len(known):.2f} |" if known else f"| {method} |" + " |" * (len(sets) + 1))
    return "\n".join(lines)


def main_table(rows: list[dict], model: str, calibration: str | None) -> str:
    """Per set: FP, then each method's WER at each bit setting (calibrated methods on `calibration`)."""
    mine = [r for r in rows if r["model"] == model
            and (r["bits"] == "fp" or not calibrated(r) or calibration_label(r) == calibration)]
    sets = sorted({r["dataset"] for r in mine})
    columns = sorted({(r["bits"], method_label(r)) for r in mine if r["bits"] != "fp"})
    if not sets or not columns:
        return ""
    eff = {(r["bits"], method_label(r)): _bits(r) for r in mine}
    head = ["set", "FP"] + [f"{m} {b.upper()} ({eff[b, m]} b)" for b, m in columns]
    head += ["best W4 (Δ, bits)", "best W3 (Δ, bits)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in sets:
        at = {(r["bits"], method_label(r)): r for r in mine if r["dataset"] == s}
        fp = at.get(("fp", "fp"))
        row = [s, f"{fp['wer']:.2f}" if fp else ""]
        row += [f"{at[c]['wer']:.2f}" if c in at else "" for c in columns]
        for bits in ("w4a16", "w3a16"):
            cands = [(r["wer"], m) for (b, m), r in at.items() if b == bits]
            if cands and fp:
                wer, method = min(cands)
                row.append(f"{method} {wer:.2f} ({wer - fp['wer']:+.2f}, {eff[bits, method]} b)")
            else:
                row.append("")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _clips_of(row: dict) -> tuple:
    """Rows with the same value scored the same model on the same clips."""
    return row["model"], row["dataset"], row.get("limit"), row.get("spread")


def _measured_on(row: dict) -> tuple:
    """Rows with the same value scored the same model on the same clips at the same bits and grid."""
    return _clips_of(row) + (row["bits"], row.get("group_size"))


def _paired_with_rtn(rows: list[dict]):
    """(row, RTN row at the same bits on the same clips) for every non-baseline row, both keeping `clip_errors`."""
    rtn = {_measured_on(r): r for r in rows if r["method"] == "rtn" and "clip_errors" in r}
    for r in sorted(rows, key=lambda r: (r["model"], r["dataset"], r["bits"], method_label(r))):
        base = rtn.get(_measured_on(r))
        if r["method"] not in BASELINES and "clip_errors" in r and base:
            yield r, base


def versus_rtn_table(rows: list[dict], calibration: str) -> str:
    """Each method minus RTN at the same bits on the same clips, with a 95 % paired-bootstrap interval; calibrated
    methods on `calibration`, counted apart from the calibration-free ones.

    Only rows that keep `clip_errors` take part: a corpus WER alone cannot say whether a few words are the
    method or the choice of clips."""
    lines = ["| model | set | bits | method (bits/weight) | WER % | RTN % | Δ vs RTN [95 % CI] | P(worse) | verdict |",
             "|---|---|---|---|---:|---:|---|---:|---|"]
    verdicts: dict[str, dict[str, int]] = {"calibrated": defaultdict(int), "calibration-free": defaultdict(int)}
    for r, base in _paired_with_rtn(rows):
        if calibrated(r) and calibration_label(r) != calibration:
            continue
        delta = paired_bootstrap(r["clip_errors"], base["clip_errors"])
        verdicts["calibrated" if calibrated(r) else "calibration-free"][delta.verdict] += 1
        optional = callable(get_method(r["method"]).calibrated)  # say so where only some settings calibrate
        name = method_label(r) + (", no calibration" if optional and not calibrated(r) else "")
        lines.append(f"| {r['model']} | {r['dataset']} | {r['bits']} | {name} ({_bits(r)}) | {r['wer']:.2f} | "
                     f"{base['wer']:.2f} | {delta} | {delta.p_a_worse:.2f} | {delta.verdict} |")
    tallies = [f"{kind}: {sum(counts.values())} comparisons, "
               + ", ".join(f"{counts[v]} {v}" for v in ("worse", "tie", "better")) + " than RTN (interval excludes 0)."
               for kind, counts in verdicts.items() if counts]
    return "\n".join(lines + [""] + tallies) if tallies else ""


def early_end_versus_fp_table(rows: list[dict]) -> str:
    """Early-end words per method, split into clips the FP model also ends early (the model's own) and the rest."""
    fp = {_clips_of(r): r for r in rows if r["method"] == "fp" and "clip_errors" in r}
    lines = ["| model | set | method | bits | early-end words (clips) | on clips FP ends early too | added by quantization |",
             "|---|---|---|---|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["model"], r["dataset"], r["bits"] != "fp", method_label(r))):
        base = fp.get(_clips_of(r))
        if "clip_errors" not in r or not base:
            continue
        early = {c: e[2] for c, e in r["clip_errors"].items() if e[2]}
        own = sum(n for c, n in early.items() if base["clip_errors"].get(c, [0, 0, 0])[2])
        lines.append(f"| {r['model']} | {r['dataset']} | {method_label(r)} | {r['bits']} | {sum(early.values())} "
                     f"({len(early)}) | {own} | {sum(early.values()) - own} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def early_end_versus_rtn(rows: list[dict]) -> str:
    """The goal's clause: each method's early-end words against RTN's at the same bits on the same clips."""
    more, compared = [], 0
    for r, base in _paired_with_rtn(rows):
        compared += 1
        words, rtn_words = (sum(e[2] for e in row["clip_errors"].values()) for row in (r, base))
        if words > rtn_words:
            seed = (r.get("calibration") or {}).get("seed")
            more.append(f"{r['model']} {r['dataset']} {r['bits']} {method_label(r)}{f' seed {seed}' if seed else ''} "
                        f"({words} vs {rtn_words})")
    if not compared:
        return ""
    return (f"Early-end words against RTN at the same bits on the same clips: {compared} comparisons, "
            f"{len(more)} with more words lost than RTN" + (": " + "; ".join(more) if more else "") + ".")


def versus_default_table(rows: list[dict], calibration: str) -> str:
    """Each row run with non-default method options against the same method with its defaults, same bits, same clips,
    same calibration (`calibration`): what an option would change if it became the default."""
    default = {_measured_on(r) + (r["method"],): r for r in rows
               if not r.get("options") and "clip_errors" in r and calibration_label(r) == calibration}
    lines = ["| model | set | bits | method | WER % | default % | Δ vs default [95 % CI] | verdict | early-end words "
             "(default) |", "|---|---|---|---|---:|---:|---|---|---|"]
    verdicts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in sorted(rows, key=lambda r: (method_label(r), r["model"], r["dataset"], r["bits"])):
        base = default.get(_measured_on(r) + (r["method"],))
        if not r.get("options") or "clip_errors" not in r or not base or calibration_label(r) != calibration:
            continue
        delta = paired_bootstrap(r["clip_errors"], base["clip_errors"])
        verdicts[method_label(r)][delta.verdict] += 1
        lines.append(f"| {r['model']} | {r['dataset']} | {r['bits']} | {method_label(r)} | {r['wer']:.2f} | "
                     f"{base['wer']:.2f} | {delta} | {delta.verdict} | {r.get('early_end_words', '?')} "
                     f"({base.get('early_end_words', '?')}) |")
    if len(lines) == 2:
        return ""
    tallies = [f"{label}: " + ", ".join(f"{counts[v]} {v}" for v in ("worse", "tie", "better")) + " than the default."
               for label, counts in sorted(verdicts.items())]
    return "\n".join(lines + [""] + tallies)


def seed_spread_table(rows: list[dict]) -> str:
    """Calibrated cells quantized with more than one calibration seed (the same sequences, another draw of
    the rows a search scores): WER and early-end words per seed next to RTN's, so a gap to RTN can be weighed
    against what the draw alone moves."""
    draws: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for r in rows:
        if calibrated(r):
            cal = {k: v for k, v in r["calibration"].items() if k != "seed"}
            draws[_measured_on(r) + (method_label(r), json.dumps(cal, sort_keys=True))][r["calibration"].get("seed", 0)] = r
    rtn = {_measured_on(r): r for r in rows if r["method"] == "rtn"}
    lines = ["| model | set | bits | method | WER % by seed | spread | RTN % | early-end words by seed (RTN) |",
             "|---|---|---|---|---|---:|---:|---|"]
    for key, by_seed in sorted(draws.items()):
        if len(by_seed) < 2:
            continue
        seeds = sorted(by_seed)
        wers = [by_seed[s]["wer"] for s in seeds]
        base = rtn.get(key[:6])
        lines.append(f"| {key[0]} | {key[1]} | {key[4]} | {key[6]} | "
                     + ", ".join(f"{s}: {w:.2f}" for s, w in zip(seeds, wers)) + f" | {max(wers) - min(wers):.2f} | "
                     + (f"{base['wer']:.2f}" if base else "") + " | "
                     + ", ".join(str(by_seed[s].get("early_end_words", "?")) for s in seeds)
                     + (f" ({base.get('early_end_words', '?')})" if base else "") + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def render(rows: list[dict], calibration: str) -> str:
    rows = _ok(rows)
    parts = ["# Held-out study tables (generated by `python -m edgeasr.bench.heldout`)", "",
             "## Words lost to an early end of text, long-form items", "", early_end_table(rows), ""]
    paired = versus_rtn_table(rows, calibration)
    if paired:
        parts += [f"## Methods against RTN on the same clips (calibrated ones on {calibration})", "", paired, ""]
    options = versus_default_table(rows, calibration)
    if options:
        parts += [f"## Options against the method's defaults on the same clips ({calibration})", "", options, ""]
    seeds = seed_spread_table(rows)
    if seeds:
        parts += ["## Calibration seed: what another draw of the calibration rows moves", "", seeds, ""]
    own = early_end_versus_fp_table(rows)
    if own:
        parts += ["## Early ends the FP model makes too", "", own, "", early_end_versus_rtn(rows), ""]
    for model in sorted({r["model"] for r in rows}):
        for bits in ("w4a16", "w3a16"):
            cross = cross_domain_table(rows, model, bits)
            if cross:
                parts += [f"## Calibration domain, {model} {bits.upper()} g64", "", cross, ""]
        table = main_table(rows, model, calibration)
        if table:
            parts += [f"## {model}: WER % per set (calibrated methods on {calibration})", "", table, ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="?", default=Path("bench/results/heldout.jsonl"))
    parser.add_argument("--out", type=Path, default=None, help="markdown file (default: next to the results)")
    parser.add_argument("--calibration", default="calib-mix 64x1 t128",
                        help="calibration of the calibrated methods in the per-model tables")
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    out = args.out or args.results.with_suffix(".md")
    out.write_text(render(rows, args.calibration))
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
