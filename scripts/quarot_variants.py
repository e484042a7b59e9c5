"""QuaRot variants at one bit width against the FP model on held-out clips (tts-en: voices never calibrated on).

Prints, per variant, the relative error of the encoder states and of the teacher-forced decoder logits (mean over
clips), the measure tests/quant_support.py uses. Variants: plain (H alone), s<seed> (randomized Hadamard D·H with
that seed, the default is s0), gptq (D·H with GPTQ on the rotated basis, the study's 16 x 4 calibration), rtn (no
rotation). Usage: python scripts/quarot_variants.py whisper-tiny.en 3 plain,s0,s1,s2,gptq,rtn
"""

from __future__ import annotations

import sys
import time

import torch

from edgeasr.audio import prepare_audio
from edgeasr.backends.compare import output_errors
from edgeasr.backends.hf import HFBackend
from edgeasr.data import load_manifest
from edgeasr.quant.api import quantize
from edgeasr.quant.calibrate import CalibrationClip
from edgeasr.quant.recipe import CalibrationOptions, Recipe
from edgeasr.zoo import fetch

STUDY_CALIBRATION = CalibrationOptions("asterisk-en-calib", n_clips=16, concat=4, max_decoder_tokens=64)
VARIANTS = {"plain": ("quarot", {"random_signs": False}), "gptq": ("quarot", {"weight_method": "gptq"}),
            "rtn": ("rtn", {})}


def variant(name: str) -> tuple[str, dict]:
    return ("quarot", {"seed": int(name[1:])}) if name.startswith("s") else VARIANTS[name]


def main() -> None:
    model, bits, names = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
    torch.set_num_threads(1)
    utterances = [u for u in load_manifest("tts-en") if u.text][::25][:8]
    clips = [CalibrationClip(prepare_audio(u.audio), u.text) for u in utterances]
    reference = HFBackend.from_pretrained(fetch(model))
    for name in names:
        start = time.perf_counter()
        method, options = variant(name)
        backend, _, _ = quantize(Recipe(model, method, bits, 16, 64, calibration=STUDY_CALIBRATION, options=options))
        enc, logits = output_errors(reference, backend, clips)
        print(f"{model} W{bits} {name}: encoder rel err {enc:.4f}, logits rel err {logits:.4f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
