"""Issue 19's long-clip failure: a quantized whisper-tiny.en must not end early on a ~15 s clip.

With the study's old calibration (one speaker's 1-2-word prompts, decoder positions up to 64) QUIK W4
stopped decoding seconds before the speech did on long clips; with the default calibration (calib-mix)
it must transcribe to the end, as the FP model does.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from edgeasr.audio import SEGMENTATION_REVISION
from edgeasr.bench.breakdown import (EARLY_END_DETECTOR, EARLY_END_MIN_WORDS, breakdown, skipped_words,
                                     trailing_deletions)
from edgeasr.data import build_dataset, load_manifest
from edgeasr.engine import Engine
from edgeasr.metrics.wer import normalize
from edgeasr.quant.api import quantize_to_checkpoint
from edgeasr.quant.methods import method_revision
from edgeasr.quant.recipe import CalibrationOptions, Recipe


def test_trailing_and_skipped_words() -> None:
    ref = "one two three four five six seven eight"
    assert trailing_deletions(ref, "one two three") == 5  # stopped after three words
    assert trailing_deletions(ref, "one two three four five six seven eight") == 0
    assert trailing_deletions(ref, "one two three four five six seven ate") == 0  # a substitution is not an end
    assert trailing_deletions(ref, "") == 8
    # Words joined differently up to the last one (whisper-base AWQ W4 on flite-kal-h03-01): no early end ...
    sock = "the small pup gnawed a hole in the sock"
    assert trailing_deletions(sock, "the small pop nordaholin vesak") < EARLY_END_MIN_WORDS
    assert trailing_deletions(sock, "the small part") == 6
    # ... where a decoder that stopped before the speech did loses what follows (moonshine-tiny OS+ W4A8, speed-en).
    key = "please enter your conference number followed by the pound key"
    assert trailing_deletions(key, "please add to your conference number followed") == 4
    assert trailing_deletions(ref, "one two thr") == 5  # a word cut short is not counted lost
    assert skipped_words(ref, "one two seven eight") == 4  # a jump over four words
    assert skipped_words(ref, "one three five seven") == 0  # single misses are no run
    rows = [{"id": "long", "reference_norm": ref, "hypothesis_norm": "one two", "audio_seconds": 12.0},
            {"id": "short", "reference_norm": "a b", "hypothesis_norm": "a b", "audio_seconds": 2.0}]
    out = breakdown(rows)
    assert out["early_end_words"] == 6 and out["early_end_clips"] == 1 and out["skipped_words"] == 6
    assert out["by_length"]["10-17s"] == {"utterances": 1, "words": 8, "deletions": 6, "errors": 6}
    assert out["by_length"]["0-5s"]["errors"] == 0
    assert out["clip_errors"] == {"long": [6, 8, 6], "short": [0, 2, 0]}
    looped = breakdown([{**rows[0], "hypothesis_norm": "", "last_segment_dropped": "repetition (compression ratio 6.30)"}])
    assert (looped["loop_words"], looped["loop_clips"], looped["early_end_words"]) == (8, 1, 0)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # quantizing on 16 long sequences takes ~3 min on an idle 2-core machine
def test_quantized_whisper_does_not_end_early_on_long_clips(tmp_path: Path) -> None:
    build_dataset("longform-en")
    build_dataset("calib-mix")
    clips = sorted((u for u in load_manifest("longform-en")), key=lambda u: abs(u.seconds - 15.0))[:2]
    assert all(12.0 <= u.seconds <= 18.0 for u in clips)
    # The default calibration set and decoder positions, 16 of its 64 sequences to keep the test short.
    recipe = Recipe("whisper-tiny.en", "quik", w_bits=4, calibration=replace(CalibrationOptions(), n_clips=16))
    checkpoint = quantize_to_checkpoint(recipe, tmp_path / "quik-w4")
    quantized, fp = Engine.load(checkpoint), Engine.load("whisper-tiny.en")
    for utt in clips:
        ref = normalize(utt.text)
        assert trailing_deletions(ref, normalize(fp.transcribe(utt.audio).text)) < EARLY_END_MIN_WORDS, utt.id
        hypothesis = normalize(quantized.transcribe(utt.audio).text)
        lost = trailing_deletions(ref, hypothesis)
        assert lost < EARLY_END_MIN_WORDS, f"{utt.id} ({utt.seconds} s): {lost} words lost at the end: {hypothesis!r}"


def test_tables_keep_the_latest_of_a_measurement_of_the_current_method_and_name_effective_bits() -> None:
    from edgeasr.bench.heldout import render

    def row(method: str, bits: str, wer: float, key: str, eff: float | None = None) -> dict:
        cal = {"dataset": "calib-mix", "n_clips": 64, "concat": 1, "max_decoder_tokens": 128, "seed": 0}
        return {"key": key, "status": "ok", "model": "m", "method": method, "bits": bits, "group_size": 64,
                "dataset": "tts-en", "limit": 50, "spread": True, "calibration": None if method == "fp" else cal,
                "options": {}, "wer": wer, "effective_bits": eff, "deletions": 0,
                "segmentation": SEGMENTATION_REVISION, "early_end_detector": EARLY_END_DETECTOR}

    rows = [row("fp", "fp", 10.0, "a"), row("rtn", "w4a16", 12.0, "b", 4.31),
            row("gptq", "w4a16", 13.0, "old-key", 4.31), row("gptq", "w4a16", 11.5, "new-key", 4.31)]
    stale_hqq = row("hqq", "w4a16", 9.0, "c", 4.31)  # no method_revision: HQQ's first fit, superseded
    raw_opening = {**row("awq", "w4a16", 8.0, "d", 4.31), "segmentation": 1}  # decoded before the opening cut
    word_only = {**row("spqr", "w4a16", 7.0, "e", 4.31), "early_end_detector": 1}  # early ends counted by words
    text = render(rows + [stale_hqq, raw_opening, word_only], "calib-mix 64x1 t128")
    assert "| tts-en | 10.00 | 11.50 | 12.00 | gptq 11.50 (+1.50, 4.31 b) |" in text  # the re-run replaced 13.0
    assert "hqq" not in text and "9.00" not in text
    assert "awq" not in text and "8.00" not in text
    assert "spqr" not in text and "7.00" not in text
    assert "gptq W4A16 (4.31 b)" in text and "13.00" not in text


def test_paired_table_compares_with_rtn_on_the_same_clips_and_splits_off_fps_own_early_ends() -> None:
    from edgeasr.bench.heldout import render

    cal = {"dataset": "calib-mix", "n_clips": 64, "concat": 1, "max_decoder_tokens": 128, "seed": 0}

    def row(method: str, bits: str, clips: dict) -> dict:
        errors = sum(e[0] for e in clips.values())
        words = sum(e[1] for e in clips.values())
        return {"key": method, "status": "ok", "model": "m", "method": method, "bits": bits, "group_size": 64,
                "dataset": "longform-en", "limit": 50, "spread": True, "options": {}, "deletions": 0,
                "segmentation": SEGMENTATION_REVISION, "early_end_detector": EARLY_END_DETECTOR,
                "calibration": None if method == "fp" else cal,
                "wer": 100 * errors / words, "clip_errors": clips}

    fp = {f"c{i}": [1, 20, 0] for i in range(40)} | {"c0": [12, 20, 12]}  # FP itself ends c0 early
    rtn = {f"c{i}": [2, 20, 0] for i in range(40)}
    gptq = dict(fp)  # keeps FP's early end on c0, one error per clip elsewhere
    awq = {f"c{i}": [2, 20, 0] for i in range(40)} | {"c5": [8, 20, 6]}  # an early end FP does not make
    quarot = {f"c{i}": [4, 20, 0] for i in range(40)}  # rotated RTN: no calibration, and worse on every clip
    text = render([row("fp", "fp", fp), row("rtn", "w4a16", rtn), row("gptq", "w4a16", gptq),
                   row("awq", "w4a16", awq), row("quarot", "w4a16", quarot)], "calib-mix 64x1 t128")
    assert "| m | longform-en | w4a16 | gptq (-) | 6.38 | 10.00 | -3.62 [" in text and "| better |" in text
    assert "| awq (-) | 10.75 | 10.00 | +0.75 [" in text and "| tie |" in text  # one clip's 6 words: noise
    assert "calibrated: 2 comparisons, 0 worse, 1 tie, 1 better than RTN" in text
    assert "| quarot, no calibration (-) | 20.00 | 10.00 | +10.00 [" in text
    assert "calibration-free: 1 comparisons, 1 worse, 0 tie, 0 better than RTN" in text
    assert "| m | longform-en | gptq | w4a16 | 12 (1) | 12 | 0 |" in text  # FP's own early end
    assert "| m | longform-en | awq | w4a16 | 6 (1) | 0 | 6 |" in text  # added by quantization
    assert ("3 comparisons, 2 with more words lost than RTN: m longform-en w4a16 awq (6 vs 0); "
            "m longform-en w4a16 gptq (12 vs 0)." in text)  # the goal's clause counts FP's own early end too


def test_options_are_paired_with_the_method_defaults_and_calibration_seeds_kept_apart() -> None:
    from edgeasr.bench.heldout import render

    def row(options: dict, seed: int, clips: dict, method: str = "osplus") -> dict:
        cal = {"dataset": "calib-mix", "n_clips": 64, "concat": 1, "max_decoder_tokens": 128, "seed": seed}
        return {"key": f"{method}{options}{seed}", "status": "ok", "model": "m", "method": method, "bits": "w4a8",
                "group_size": 64, "dataset": "tts-en", "limit": 50, "spread": True, "options": options,
                "deletions": 0, "segmentation": SEGMENTATION_REVISION, "early_end_detector": EARLY_END_DETECTOR,
                "calibration": cal, "method_revision": method_revision(method), "clip_errors": clips,
                "early_end_words": sum(e[2] for e in clips.values()),
                "wer": 100 * sum(e[0] for e in clips.values()) / sum(e[1] for e in clips.values())}

    default = {f"c{i}": [2, 10, 0] for i in range(40)}
    searched = {f"c{i}": [1, 10, 0] for i in range(40)}  # one error fewer on every clip
    other_draw = {f"c{i}": [3, 10, 0] for i in range(40)} | {"c1": [5, 10, 4]}
    rows = [row({}, 0, default), row({"shift": "search"}, 0, searched), row({}, 1, other_draw),
            row({}, 0, {f"c{i}": [2, 10, 0] for i in range(40)}, method="rtn"),
            {**row({}, 0, {f"c{i}": [1, 10, 0] for i in range(40)}, method="fp"), "bits": "fp", "calibration": None}]
    text = render(rows, "calib-mix 64x1 t128")
    assert "| m | tts-en | w4a8 | osplus shift=search | 10.00 | 20.00 | -10.00 [" in text
    assert "osplus shift=search: 0 worse, 0 tie, 1 better than the default." in text
    # another calibration draw is its own measurement: it neither replaces seed 0 nor enters the study's tables
    assert "| m | tts-en | w4a8 | osplus | 0: 20.00, 1: 30.50 | 10.50 | 20.00 | 0, 4 (0) |" in text
    assert "osplus seed 1 (4 vs 0)" in text
