"""Does OS+'s per-site shift decision carry over to audio the calibration never saw? (issue 19, session 17)

Runs OS+ exactly as `edgeasr quantize --option shift=search` does (calib-mix; revision 1's default) while a held-out set's clips flow
through the same, already-quantized blocks beside the calibration clips without taking part in any decision. Per
scale site it writes the quantized output error of the best unshifted and the best shifted candidate (each the
threshold the calibration rows chose) on the calibration rows and on the held-out rows, the error with no
transform at all, and which candidate the method kept. Whisper's encoder runs on 30 s windows, so most of its rows
are the zero padding after a short clip; `*_audio` repeats each score on the rows of the clip's own frames (50 per
second), and `kept_on_audio` is the choice a search on the calibration's audio frames alone would make:

    python scripts/osplus_shift_probe.py whisper-tiny.en --held-out noisy-en-10db --out bench/results/osplus-shift-probe.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path

import torch

from edgeasr.audio import prepare_audio
from edgeasr.backends.hf import HFBackend
from edgeasr.data.manifest import load_manifest
from edgeasr.quant.calibrate import BlockContext, CalibrationClip, hook_linear_inputs
from edgeasr.quant.job import QuantJob
from edgeasr.quant.methods._folding import SiteScorer, apply_scale, apply_shift, quantize_block_linears, scale_sites
from edgeasr.quant.methods._stats import InputStats, collect_input_stats
from edgeasr.quant.methods.osplus import OSPlusOptions, search_site
from edgeasr.quant.recipe import Recipe
from edgeasr.zoo import resolve_model_dir


ENCODER_FRAMES = 1500
"""Whisper's encoder positions per 30 s window (50 per second)."""


def audio_rows_stats(ctx: BlockContext, clips: list[CalibrationClip], paths: list[str], max_rows: int,
                     seed: int) -> dict[str, InputStats]:
    """Like `collect_input_stats`, keeping of an encoder-window input only the frames of the clip's audio."""
    stats = {p: InputStats.empty(ctx.linear(p).in_features, gram=False) for p in paths}
    for item, clip in zip(ctx.inputs, clips):
        frames = math.ceil(clip.audio.size / 16000 * 50)

        def observe(path: str, x: torch.Tensor) -> None:
            layer = ctx.linear(path)
            if hasattr(layer, "transform_input"):
                x = layer.transform_input(x).float()
            stats[path].add(x[:frames] if x.shape[0] == ENCODER_FRAMES else x, keep_rows=True)

        with hook_linear_inputs(ctx.block, paths, observe):
            item.call(ctx.block)
    generator = torch.Generator().manual_seed(seed)
    for st in stats.values():
        st.sample_rows(max_rows, generator)
    return stats


def spread(items: list, n: int) -> list:
    """`n` items evenly spaced over the list (as the sweeps' `spread = true` picks clips)."""
    return items if len(items) <= n else [items[i * len(items) // n] for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--held-out", default="noisy-en-10db")
    parser.add_argument("--clips", type=int, default=32, help="held-out clips (evenly spaced over the set)")
    parser.add_argument("--w-bits", type=int, default=4)
    parser.add_argument("--a-bits", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    recipe = Recipe(args.model, "osplus", args.w_bits, args.a_bits, 64)
    options = OSPlusOptions()
    backend = HFBackend.from_pretrained(resolve_model_dir(args.model)[0], args.model)
    job = QuantJob(backend, recipe)
    calibration = job.clips
    held = [CalibrationClip(prepare_audio(u.audio), u.text)
            for u in spread([u for u in load_manifest(args.held_out) if u.text], args.clips)]
    job._clips = calibration + held  # held-out clips ride along; only the calibration slice decides anything
    n = len(calibration)
    out = args.out.open("w")

    @torch.inference_mode()
    def process(ctx: BlockContext) -> None:
        sites = scale_sites(ctx.graph, keep_on_layer=options.scale_layers)
        paths = [s.input_path for s in sites]
        seed = recipe.calibration.seed
        cal = collect_input_stats(replace(ctx, inputs=ctx.inputs[:n]), paths, max_rows=options.max_tokens, seed=seed)
        other = collect_input_stats(replace(ctx, inputs=ctx.inputs[n:]), paths, max_rows=options.max_tokens, seed=seed)
        cal_audio = audio_rows_stats(replace(ctx, inputs=ctx.inputs[:n]), calibration, paths, options.max_tokens, seed)
        other_audio = audio_rows_stats(replace(ctx, inputs=ctx.inputs[n:]), held, paths, options.max_tokens, seed)
        for site in sites:
            found = search_site(SiteScorer(ctx.block, site, cal[site.input_path], job.w_spec, job.a_spec),
                                cal[site.input_path], (False, True), options.n_grid)
            found_audio = search_site(SiteScorer(ctx.block, site, cal_audio[site.input_path], job.w_spec, job.a_spec),
                                      cal_audio[site.input_path], (False, True), options.n_grid)
            kept = min(found, key=lambda shifted: found[shifted][2])
            row = {"block": ctx.name, "site": site.input_path, "kind": site.kind, "shift_kept": kept,
                   "kept_on_audio": min(found_audio, key=lambda shifted: found_audio[shifted][2])}
            for where, st in (("calibration", cal), ("held_out", other), ("calibration_audio", cal_audio),
                              ("held_out_audio", other_audio)):
                score = SiteScorer(ctx.block, site, st[site.input_path], job.w_spec, job.a_spec)
                row[where] = {"none": score(), "scaled": score(found[False][0], None),
                              "shifted": score(found[True][0], found[True][1])}
            out.write(json.dumps(row) + "\n")
            out.flush()
            s, delta, _ = found[kept]
            if delta is not None:
                apply_shift(ctx.block, site, delta)
            apply_scale(ctx.block, site, s)
        quantize_block_linears(ctx.block, ctx.graph, job.w_spec, job.a_spec)

    job.walk(process, desc=f"osplus probe ({args.held_out} alongside)")
    out.close()
    rows = [json.loads(line) for line in args.out.read_text().splitlines()]
    for where in ("calibration", "held_out", "calibration_audio", "held_out_audio"):
        chosen = sum(r[where]["shifted" if r["shift_kept"] else "scaled"] for r in rows)
        scaled = sum(r[where]["scaled"] for r in rows)
        print(f"{where}: sum of site errors, as chosen {chosen:.4g}, scaling only {scaled:.4g} "
              f"({100 * (chosen / scaled - 1):+.1f} %)")
    for where in ("held_out", "held_out_audio"):
        worse = [r for r in rows if r["shift_kept"] and r[where]["shifted"] > r[where]["scaled"]]
        print(f"shift kept at {sum(r['shift_kept'] for r in rows)} of {len(rows)} sites "
              f"({sum(r['kept_on_audio'] for r in rows)} on the audio frames alone); worse on {where} than scaling "
              f"only at {len(worse)}: " + ", ".join(f"{r['block']}.{r['site']} ({r[where]['shifted'] / r[where]['scaled']:.2f}x)"
                                                    for r in worse))


if __name__ == "__main__":
    main()
