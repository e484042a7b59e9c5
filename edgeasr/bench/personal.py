"""Tuned on your voice: calibrate on one voice's unlabelled audio, evaluate on that voice's held-back sentences.

For each model and bit width, three calibrations of the same method, each with about the same audio (~100 s):

* `generic`: the default set (calib-mix, labelled: teacher-forced decoder inputs), what every user gets;
* `tts-mix`: the five TTS voices of `tts-en-calib` together, unlabelled: the same kind of audio and the same
  label-free decoding as `own`, but not only the evaluated voice (separates "this voice" from "TTS audio");
* `own`: the evaluated voice's own `tts-en-calib` sentences (Harvard lists 5-8), unlabelled, as a user's
  folder of recordings would be.

Every model is scored per voice on `tts-en` (lists 1-4: never in any calibration), with each utterance's
word errors kept so a difference can be checked utterance by utterance.
`edgeasr bench personal [--models M ...] [--bits 4 3]` appends rows to `bench/results/personal/personal.jsonl`
(resuming: rows already there are not run again) and rewrites `personal.md`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RESULTS = Path("bench/results/personal")
FP_ROWS = Path("bench/results/fp_eval")
"""Per-utterance FP transcripts of `tts-en` (`edgeasr eval --out bench/results/fp_eval`): the FP column."""
ARMS = ("generic", "tts-mix", "own")


@dataclass(frozen=True)
class PersonalOptions:
    """What the personalisation bench covers."""

    models: tuple[str, ...] = ("moonshine-tiny", "whisper-tiny.en")
    """Zoo models."""
    bits: tuple[int, ...] = (4, 3)
    """Uniform weight bits (W3 is stored in 4-bit containers: it is the calibration-sensitive setting)."""
    avg_bits: tuple[float, ...] = ()
    """Mixed-precision settings: effective bits per weight, the bits of each layer chosen (`quantize --avg-bits`)
    from the sensitivity on the arm's own calibration audio, so `own` tunes both the bits and the method to the
    voice, at the same budget as `generic`."""
    estimator: str = "myqasr"
    """Sensitivity estimator of the mixed settings (`quant.sensitivity.ESTIMATORS`)."""
    group_size_at: tuple[tuple[int, int], ...] = ()
    """(bits, group size) of the mixed settings' layers at those bits (`Recipe.group_size_at`)."""
    method: str = "gptq"
    """Base method; GPTQ's Hessian is built from the calibration audio, so calibration can show."""
    voices: tuple[str, ...] = ()
    """TTS voices (`data.tts.VOICES` names); empty = all five."""
    arms: tuple[str, ...] = ARMS
    """Calibrations compared (`ARMS`); `own` is always needed for the per-voice difference."""
    eval_set: str = "tts-en"
    """Labelled sentences of every voice, never calibrated on."""
    calib_set: str = "tts-en-calib"
    """The same voices reading other sentences: the "user's recordings"."""
    sequences: int = 10
    """Calibration sequences of the TTS arms, each `concat` sentences joined (~10 s, ~100 s in all)."""
    concat: int = 4
    """TTS sentences (~2.5 s) joined into one sequence, so sequences look like a user's 10-20 s recordings."""
    generic_clips: int = 8
    """calib-mix items of the generic arm (~12.9 s each: about the audio of the TTS arms)."""
    threads: int = 1
    """torch threads for quantization and evaluation (1: on a busy machine a second OpenMP thread mostly waits)."""


def voice_of(utterance_id: str) -> str:
    """`flite-rms-h01-01` → `flite-rms`."""
    return utterance_id.rsplit("-h", 1)[0]


def _arm_calibrations(options: PersonalOptions, voices: list[str]) -> dict[str, object]:
    """Arm name (`generic`, `tts-mix`, `own:VOICE`) → CalibrationOptions, writing the unlabelled manifests."""
    from edgeasr.data.manifest import load_manifest
    from edgeasr.paths import cache_dir
    from edgeasr.quant.recipe import CalibrationOptions
    from edgeasr.quant.user_audio import unlabelled_manifest

    pool = load_manifest(options.calib_set)
    folder = cache_dir("data") / "personal"
    size = options.sequences * options.concat
    calibrations = {"generic": CalibrationOptions("calib-mix", n_clips=options.generic_clips)}
    mix = random.Random(0).sample(pool, min(size, len(pool)))
    sets = {"tts-mix": mix, **{f"own:{v}": [u for u in pool if voice_of(u.id) == v] for v in voices}}
    for arm, utterances in sets.items():
        path = unlabelled_manifest(utterances, folder / f"{options.calib_set}-{arm.replace(':', '-')}.jsonl")
        calibrations[arm] = CalibrationOptions(str(path), n_clips=options.sequences, concat=options.concat)
    return calibrations


def _errors(row: dict) -> int:
    from edgeasr.metrics.wer import corpus_wer

    wer = corpus_wer([row["reference"]], [row["hypothesis"]])
    return wer.substitutions + wer.deletions + wer.insertions


def _voice_rows(rows: list[dict], voices: list[str]) -> dict[str, dict]:
    """Per-voice corpus WER and per-utterance error counts of one evaluation's rows."""
    from edgeasr.metrics.wer import corpus_wer

    out = {}
    for voice in voices:
        mine = [r for r in rows if voice_of(r["id"]) == voice]
        wer = corpus_wer([r["reference"] for r in mine], [r["hypothesis"] for r in mine])
        out[voice] = {"wer": round(100 * wer.wer, 3), "errors": wer.substitutions + wer.deletions + wer.insertions,
                      "reference_words": wer.reference_words, "utterances": wer.utterances,
                      "utterance_errors": {r["id"]: _errors(r) for r in mine}}
    return out


def _eval_manifest(options: PersonalOptions, voice: str | None) -> str:
    """The evaluation set, or one voice's part of it (labelled)."""
    from edgeasr.data.manifest import load_manifest, write_manifest
    from edgeasr.paths import cache_dir

    if voice is None:
        return options.eval_set
    path = cache_dir("data") / "personal" / f"{options.eval_set}-{voice}.jsonl"
    write_manifest(path, [u for u in load_manifest(options.eval_set) if voice_of(u.id) == voice])
    return str(path)


def settings(options: PersonalOptions) -> list[tuple[str, int | None, float | None]]:
    """(key, uniform bits, effective-bits target) of the uniform and mixed settings, in the order they run;
    keys `w4`, `w3`, `avg3.5-w2g32`, ..."""
    grids = "".join(f"-w{b}g{g}" for b, g in sorted(options.group_size_at))
    return ([(f"w{b}", b, None) for b in options.bits]
            + [(f"avg{b:g}{grids}", None, b) for b in options.avg_bits])


def setting_of(row: dict) -> str:
    return row.get("setting") or f"w{row['w_bits']}"  # rows from before mixed settings existed


def setting_title(setting: str) -> str:
    if setting.startswith("w"):
        return f"W{setting[1:]}A16"
    bits, *grids = setting[3:].split("-")
    return f"mixed {bits} effective bits" + "".join(
        f", {g.split('g')[0].upper()} layers in groups of {g.split('g')[1]}" for g in grids)


def _recipe(options: PersonalOptions, model: str, bits: int | None, avg_bits: float | None, calibration):
    """The arm's recipe: uniform at `bits`, or mixed at `avg_bits` with its bits planned on the arm's calibration
    audio (labels dropped)."""
    from edgeasr.quant.mixed import BudgetOptions, plan
    from edgeasr.quant.recipe import Recipe

    if bits is not None:
        return Recipe(model, options.method, bits, calibration=calibration)
    recipe, allocation, _, _ = plan(Recipe(model, options.method, 4, calibration=calibration,
                                           group_size_at=dict(options.group_size_at)),
                                    BudgetOptions(avg_bits=avg_bits, estimator=options.estimator))
    log.info("%s mixed %g bits: %s layers per width", model, avg_bits, allocation.histogram)
    return recipe


def run(options: PersonalOptions, out: Path) -> list[dict]:
    """Quantize every arm (cached checkpoints are reused), evaluate, append one row per (arm, voice) to `out`."""
    import torch

    from edgeasr.bench.cell import load_engine, scrub
    from edgeasr.bench.grid import Cell
    from edgeasr.data.tts import VOICES
    from edgeasr.evaluate import evaluate

    torch.set_num_threads(options.threads)
    voices = list(options.voices or [v.name for v in VOICES])
    done = {r["key"] for r in read_rows(out)}
    calibrations = {a: c for a, c in _arm_calibrations(options, voices).items() if a.partition(":")[0] in options.arms}
    rows = []
    out.parent.mkdir(parents=True, exist_ok=True)
    for model in options.models:
        for setting, uniform_bits, avg_bits in settings(options):
            for arm, calibration in calibrations.items():
                own = arm.partition(":")[2] or None
                evaluated = [own] if own else voices
                keys = {v: f"{model}/{options.method}/{setting}/{arm}/{v}" for v in evaluated}
                if all(k in done for k in keys.values()):
                    continue
                recipe = _recipe(options, model, uniform_bits, avg_bits, calibration)
                load = os.getloadavg()
                engine, stats = load_engine(Cell(recipe, options.eval_set, 0, False))
                report = evaluate(engine, _eval_manifest(options, own), progress=False)
                for voice, result in _voice_rows(report.rows, evaluated).items():
                    bits = list(recipe.layer_bits.values())
                    row = {"key": keys[voice], "model": model, "method": options.method, "w_bits": recipe.w_bits,
                           "setting": setting, "layer_bits_histogram": {str(b): bits.count(b) for b in sorted(set(bits))},
                           "layer_bits": recipe.layer_bits, "arm": arm.partition(":")[0], "voice": voice, **result,
                           "calibration": json.loads(scrub(json.dumps(dataclasses.asdict(calibration)))),
                           "calibration_sequences": stats.get("calibration_clips"),
                           "quantize_seconds": stats.get("quantize_seconds"),
                           "eval_compute_seconds": round(report.compute_seconds, 1),
                           "load_avg_at_start": [round(x, 2) for x in load], "threads": options.threads}
                    rows.append(row)
                    with out.open("a") as handle:
                        handle.write(json.dumps(row) + "\n")
                log.info("%s %s %s: %s", model, setting, arm,
                         ", ".join(f"{v} {r['wer']:.2f}" for v, r in _voice_rows(report.rows, evaluated).items()))
    return rows


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def fp_by_voice(model: str, eval_set: str, voices: list[str]) -> dict[str, float] | None:
    """FP WER per voice from the stored FP evaluation rows, when there are any."""
    path = FP_ROWS / f"{model}__{eval_set}.jsonl"
    if not path.exists():
        return None
    rows = [r for r in read_rows(path) if "id" in r]
    return {v: r["wer"] for v, r in _voice_rows(rows, voices).items()}


def paired(own: dict, other: dict) -> tuple[int, int]:
    """Utterances where `own` made fewer / more word errors than `other` (same sentences, same voice)."""
    a, b = own["utterance_errors"], other["utterance_errors"]
    return sum(a[i] < b[i] for i in a), sum(a[i] > b[i] for i in a)


def markdown(rows: list[dict], command: str) -> str:
    """One table per model and bits: per voice, FP / generic / tts-mix / own WER, own − generic, and the
    utterance-level wins and losses of own against generic."""
    from edgeasr.data.tts import VOICES

    order = [v.name for v in VOICES]
    lines = [f"Command: `{command}`. WER % on `tts-en` (Harvard lists 1-4) per voice; calibration ~110 s each "
             "(generic: 8 calib-mix items, labelled; tts-mix and own: 10 sequences of 4 `tts-en-calib` "
             "sentences, unlabelled). Torch fake-quant model. Own − generic < 0: own-voice calibration helped. "
             "Wins / losses: sentences (of 40) where own made fewer / more word errors than the other calibration.", ""]
    by = {(r["model"], setting_of(r), r["arm"], r["voice"]): r for r in rows}
    for model, bits in dict.fromkeys((r["model"], setting_of(r)) for r in rows):
        voices = [v for v in order if (model, bits, "own", v) in by]
        if not voices:
            continue
        fp = fp_by_voice(model, "tts-en", voices) or {}
        method = next(r["method"] for r in rows if r["model"] == model)
        lines += [f"### {model}, {method.upper()} {setting_title(bits)}", "",
                  "| voice | words | FP | generic | tts-mix | own | own − generic | wins / losses vs generic | "
                  "own − tts-mix | wins / losses vs tts-mix |", "|---|---|---|---|---|---|---|---|---|---|"]
        sums = {arm: [0, 0] for arm in ARMS}
        for v in voices:
            cells = {arm: by.get((model, bits, arm, v)) for arm in ARMS}
            own, generic, mix = cells["own"], cells["generic"], cells["tts-mix"]
            for arm, r in cells.items():
                if r:
                    sums[arm][0] += r["errors"]
                    sums[arm][1] += r["reference_words"]
            fmt = lambda r: f"{r['wer']:.2f}" if r else ""
            versus = lambda r: (f"{own['wer'] - r['wer']:+.2f} | " + "{} / {}".format(*paired(own, r))) if r else " | "
            lines.append(f"| {v} | {own['reference_words']} | {fp.get(v, float('nan')):.2f} | {fmt(generic)} | "
                         f"{fmt(mix)} | {fmt(own)} | {versus(generic)} | {versus(mix)} |")
        total = {arm: 100 * e / w if w else None for arm, (e, w) in sums.items()}
        pct = lambda t: "" if t is None else f"{t:.2f}"
        gap = lambda arm: "" if total[arm] is None else f"{total['own'] - total[arm]:+.2f}"
        lines.append(f"| **all** | {sums['own'][1]} | | {pct(total['generic'])} | {pct(total['tts-mix'])} | "
                     f"{pct(total['own'])} | {gap('generic')} | | {gap('tts-mix')} | |")
        loads = sorted({r["load_avg_at_start"][0] for r in rows if r["model"] == model and setting_of(r) == bits})
        lines += ["", f"Load average (1 min) when the runs started: {loads[0]:.1f}-{loads[-1]:.1f} on 2 cores.", ""]
    return "\n".join(lines) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from edgeasr.quant.recipe import parse_group_at

    p.add_argument("--models", nargs="+", default=list(PersonalOptions.models))
    p.add_argument("--bits", nargs="*", type=int, default=list(PersonalOptions.bits),
                   help="uniform settings (none: only the --avg-bits ones)")
    p.add_argument("--avg-bits", nargs="*", type=float, default=[],
                   help="mixed settings: effective bits per weight, each layer's bits chosen on the arm's own audio")
    p.add_argument("--group-at", nargs="*", default=[], metavar="BITS=GROUP", type=parse_group_at,
                   help="group size of the mixed settings' layers at BITS, e.g. 2=32")
    p.add_argument("--method", default=PersonalOptions.method)
    p.add_argument("--voices", nargs="*", default=[], help="TTS voices (default: all five)")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS, help="calibrations compared")
    p.add_argument("--threads", type=int, default=PersonalOptions.threads)
    p.add_argument("--out", type=Path, default=RESULTS / "personal.jsonl")
    p.add_argument("--report-only", action="store_true", help="only rewrite personal.md from --out")


def cli(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.report_only:
        run(PersonalOptions(models=tuple(args.models), bits=tuple(args.bits), avg_bits=tuple(args.avg_bits),
                            group_size_at=tuple(args.group_at),
                            method=args.method, voices=tuple(args.voices), arms=tuple(args.arms),
                            threads=args.threads), args.out)
    command = (f"edgeasr bench personal --models {' '.join(args.models)} --bits {' '.join(map(str, args.bits))} "
               + (f"--avg-bits {' '.join(f'{b:g}' for b in args.avg_bits)} " if args.avg_bits else "")
               + (f"--group-at {' '.join(f'{b}={g}' for b, g in args.group_at)} " if args.group_at else "")
               + f"--arms {' '.join(args.arms)}")
    (args.out.parent / "personal.md").write_text(markdown(read_rows(args.out), command))
    return 0
