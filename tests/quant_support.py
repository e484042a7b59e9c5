"""Shared helpers for the quantization tests: FP vs quantized error on held-out real audio.

Methods are judged on clips they were not calibrated on (the `asterisk-en` evaluation prompts, while
calibration uses `asterisk-en-calib`): relative error of the encoder output and of the decoder logits
under teacher forcing on the reference text.
"""

from __future__ import annotations

import functools

from edgeasr.audio import prepare_audio
from edgeasr.backends.compare import output_errors
from edgeasr.backends.hf import HFBackend
from edgeasr.data import build_dataset, load_manifest
from edgeasr.quant.api import quantize
from edgeasr.quant.calibrate import CalibrationClip
from edgeasr.quant.recipe import CalibrationOptions, Recipe
from edgeasr.zoo import fetch

# The short-prompt set keeps method tests fast (the default, calib-mix, holds 5-25 s items).
SMALL_CALIBRATION = CalibrationOptions("asterisk-en-calib", n_clips=8, concat=4, max_decoder_tokens=48)
QUICK_CALIBRATION = CalibrationOptions("asterisk-en-calib", n_clips=2, concat=2, max_decoder_tokens=32)
"""W8 needs little calibration: a few clips keep the end-to-end transcript checks cheap."""


@functools.lru_cache(maxsize=None)
def fp_backend(model: str) -> HFBackend:
    return HFBackend.from_pretrained(fetch(model))


@functools.lru_cache(maxsize=None)
def held_out_clips(n: int = 6) -> tuple[CalibrationClip, ...]:
    build_dataset("asterisk-en")
    build_dataset("asterisk-en-calib")
    utterances = load_manifest("asterisk-en")[::40][:n]
    return tuple(CalibrationClip(prepare_audio(u.audio), u.text) for u in utterances)


@functools.lru_cache(maxsize=None)  # RTN baselines recur across method files: quantize each recipe once
def quantized(model: str, method: str, w_bits: int, a_bits: int = 16, group_size: int = 64,
              calibration: CalibrationOptions = SMALL_CALIBRATION, **options) -> HFBackend:
    recipe = Recipe(model, method, w_bits, a_bits, group_size, calibration=calibration, options=options)
    backend, _stats, _location = quantize(recipe)
    return backend


def output_error(reference: HFBackend, candidate: HFBackend, clips=None) -> float:
    """Mean over clips of the relative error of encoder outputs plus that of teacher-forced decoder logits."""
    return sum(output_errors(reference, candidate, clips or held_out_clips()))

