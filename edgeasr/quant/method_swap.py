"""The `method` sensitivity: each linear's damage as the base method itself quantizes it, not as rounding would.

The other estimators score round-to-nearest grids. A method that compensates its rounding (GPTQ's error
feedback, AWQ's scales, QuaRot's rotation) changes which layers suffer at low bits: on whisper-base, GPTQ at 2
bits costs most in the encoder's attention, whose round-to-nearest KL is among the smallest, and little in the
encoder's MLPs, whose round-to-nearest KL is the largest (docs/budgets.md). So this estimator quantizes the model
uniformly with the recipe's method at every candidate width (cached checkpoints: the same ones a sweep's uniform
rows use) and starts from the widest. For each linear and width it takes that one linear from the model
quantized at that width and measures the teacher-forced KL against FP (`TeacherForcedKL`: no labels) on the
first `KL_CLIPS` calibration clips. The scores belong to the method, its options and its calibration (the
cache key holds them), unlike the rounding estimators' that serve every method. The
widest model is the reference state, so a method that changes the model around its linears (QuaRot's rotated
residual stream, folded norms) is measured in its own basis: every uniform model shares it (seeded).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import torch
from torch import nn
from tqdm import tqdm

from edgeasr.quant.calibrate import CalibrationClip
from edgeasr.quant.recipe import Recipe
from edgeasr.quant.teacher_kl import TeacherForcedKL

log = logging.getLogger(__name__)

KL_CLIPS = 8
"""Calibration clips the KL is measured on (the first ones): the uniform models are quantized on all of them,
but 2 swaps × every linear × every clip would make the scoring as slow as many quantizations."""


def uniform_recipe(recipe: Recipe, bits: int) -> Recipe:
    """The recipe with every linear at `bits`, in the group size a mixed layer of that width gets. Only that width's
    `group_size_at` entry is kept, so the recipe (and its cached checkpoint) is the uniform one a sweep makes."""
    return dataclasses.replace(recipe, w_bits=bits, layer_bits={},
                               group_size_at={b: g for b, g in recipe.group_size_at.items() if b == bits})


def _uniform_model(recipe: Recipe, bits: int) -> nn.Module:
    from edgeasr.quant.api import checkpoint_for
    from edgeasr.quant.checkpoint import load_checkpoint

    model, _, _ = load_checkpoint(checkpoint_for(uniform_recipe(recipe, bits)))
    return model


@torch.inference_mode()
def method_scores(backend, recipe: Recipe, clips: list[CalibrationClip], widths: tuple[int, ...],
                  linears: Iterator[tuple[str, str, nn.Linear]]) -> dict[str, tuple]:
    """`quant.sensitivity.Scores`: per linear, (KL at each width, KL at the lowest width)."""
    from edgeasr.backends.hf import HFBackend
    from edgeasr.quant.job import replace_module

    kl = TeacherForcedKL(backend, clips[:KL_CLIPS], recipe.calibration.max_decoder_tokens)  # FP references
    models = {b: _uniform_model(recipe, b) for b in widths}
    top = max(widths)
    state = HFBackend(models[top], backend.feature_extractor, backend.tokenizer, f"{recipe.label}-w{top}")
    state_encoded = kl.encode(state)
    floor = kl(state_encoded, state)
    scores = {}
    layers = list(linears)
    for part, path, _ in tqdm(layers, desc="sensitivity (method)", unit="layer"):
        own = state.model.get_submodule(path)
        errors = {top: floor}
        for b in widths:
            if b == top:
                continue
            replace_module(state.model, path, models[b].get_submodule(path))
            errors[b] = kl(kl.encode(state) if part == "encoder" else state_encoded, state)
            replace_module(state.model, path, own)
        scores[path] = (errors, errors[min(widths)])
    log.info("method: %d linears × %d widths of %s on %d clips, %d tokens; the %d-bit model alone: KL %.5f",
             len(layers), len(widths) - 1, recipe.method, len(kl.references), kl.tokens, top, floor)
    return scores
