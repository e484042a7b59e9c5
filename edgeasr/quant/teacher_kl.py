"""How far the decoder's next-token distribution has moved from FP, measured without labels."""

from __future__ import annotations

import torch

from edgeasr.quant.calibrate import CalibrationClip, decoder_ids


class TeacherForcedKL:
    """KL(P_FP || P_now) of the decoder's next-token distribution, averaged over the tokens of the clips,
    teacher-forced on the FP model's greedy tokens. The FP references are taken when it is built, so build it
    while the model is FP; afterwards it measures whatever the model's weights are when it is called."""

    @torch.inference_mode()
    def __init__(self, backend, clips: list[CalibrationClip], max_decoder_tokens: int) -> None:
        self.backend = backend
        self.first = len(backend.settings.prompt) - 1  # the position that predicts the first text token
        self.references = []
        for clip in clips:
            encoded = backend.encode(clip.audio)
            ids = torch.tensor([decoder_ids(backend, clip, encoded, max_decoder_tokens)])
            self.references.append((clip, encoded, ids, self._log_probs(encoded, ids)))
        self.tokens = sum(ref.shape[0] for *_, ref in self.references)

    def _log_probs(self, encoded, ids: torch.Tensor, backend=None) -> torch.Tensor:
        logits = (backend or self.backend).model(encoder_outputs=encoded, decoder_input_ids=ids, use_cache=False).logits
        return torch.log_softmax(logits[0, self.first:-1].float(), -1)

    @torch.inference_mode()
    def encode(self, backend=None) -> list:
        """The encoder outputs of the clips with the model's current weights (or another backend's model)."""
        return [(backend or self.backend).encode(clip.audio) for clip, *_ in self.references]

    @torch.inference_mode()
    def __call__(self, encoded: list | None = None, backend=None) -> float:
        """Mean KL per token; `encoded` (from `encode`) replaces the FP encoder outputs (None: keep them, right
        when only decoder weights differ from FP). `backend`: measure another model than the one the references
        came from (the same tokenizer and prompt)."""
        total = 0.0
        for i, (_, fp_encoded, ids, ref) in enumerate(self.references):
            logp = self._log_probs(fp_encoded if encoded is None else encoded[i], ids, backend)
            total += float((ref.exp() * (ref - logp)).sum())
        return max(total / self.tokens, 0.0)  # float noise can dip a hair below zero
