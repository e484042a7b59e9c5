"""How far a quantized torch model's outputs are from the float model's, on labelled clips."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from edgeasr.backends.hf import HFBackend

if TYPE_CHECKING:
    from edgeasr.quant.calibrate import CalibrationClip


@torch.inference_mode()
def output_errors(reference: HFBackend, candidate: HFBackend, clips: list[CalibrationClip]) -> tuple[float, float]:
    """Mean relative error over clips of the encoder output and of the decoder logits, teacher-forced on each
    clip's transcript, of `candidate` against `reference`."""
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    encoder, logits = [], []
    for clip in clips:
        enc_ref, enc_q = reference.encode(clip.audio), candidate.encode(clip.audio)
        ids = list(reference.settings.prompt) + reference.tokenizer(" " + clip.text, add_special_tokens=False).input_ids
        ids = torch.tensor([ids])
        logits_ref = reference.model(encoder_outputs=enc_ref, decoder_input_ids=ids, use_cache=False).logits
        logits_q = candidate.model(encoder_outputs=enc_q, decoder_input_ids=ids, use_cache=False).logits
        encoder.append(rel(enc_q.last_hidden_state, enc_ref.last_hidden_state))
        logits.append(rel(logits_q, logits_ref))
    return sum(encoder) / len(encoder), sum(logits) / len(logits)
