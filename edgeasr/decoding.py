"""Greedy decoding shared by the torch backend and the ONNX runtime (numpy only, no torch).

A backend supplies `step(new_tokens) -> logits` (one row per new token, the KV cache kept inside
the backend); this module owns the prompt, suppression rules, the stop condition and the signals the
hallucination guard needs (average log-probability, no-speech probability, compression ratio).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class DecodeSettings:
    """Everything greedy decoding needs to know about a model, read from its generation config."""

    family: str
    prompt: tuple[int, ...]
    eos_id: int
    suppress: tuple[int, ...] = ()
    begin_suppress: tuple[int, ...] = ()
    no_speech_id: int | None = None
    max_positions: int = 448
    tokens_per_second: float = 6.5
    """Upper bound on tokens per audio second; Moonshine hallucinates without a tight bound."""
    min_new_tokens: int = 8

    @classmethod
    def from_configs(cls, family: str, generation: dict, config: dict) -> "DecodeSettings":
        if family == "whisper":
            multilingual = bool(generation.get("is_multilingual"))
            sot = generation["decoder_start_token_id"]
            prompt = [sot]
            if multilingual:
                prompt += [generation["lang_to_id"]["<|en|>"], generation["task_to_id"]["transcribe"]]
            prompt.append(generation["no_timestamps_token_id"])
            # <|nospeech|> (<|nocaptions|> in the .en vocabulary) sits just before <|notimestamps|>.
            no_speech = generation["no_timestamps_token_id"] - 1
            return cls(family, tuple(prompt), generation["eos_token_id"],
                       tuple(generation.get("suppress_tokens") or ()),
                       tuple(generation.get("begin_suppress_tokens") or ()),
                       no_speech, config.get("max_target_positions", 448), tokens_per_second=8.0)
        if family == "moonshine":
            start = generation.get("decoder_start_token_id", config.get("decoder_start_token_id", 1))
            eos = generation.get("eos_token_id", config.get("eos_token_id", 2))
            return cls(family, (start,), eos, max_positions=config.get("max_position_embeddings", 194),
                       tokens_per_second=6.5)
        raise ValueError(f"unknown model family {family!r}")

    def max_new_tokens(self, audio_seconds: float) -> int:
        budget = max(self.min_new_tokens, math.ceil(audio_seconds * self.tokens_per_second) + 4)
        return min(budget, self.max_positions - len(self.prompt))


@dataclass
class DecodeResult:
    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float | None
    hit_token_limit: bool
    steps: int = field(default=0)


def _log_softmax(row: np.ndarray) -> np.ndarray:
    row = row.astype(np.float64)
    shifted = row - row.max()
    return shifted - np.log(np.exp(shifted).sum())


def greedy_decode(step: Callable[[list[int]], np.ndarray], settings: DecodeSettings,
                  max_new_tokens: int) -> DecodeResult:
    """Run greedy decoding; `step` gets the tokens not yet seen by the model and returns their logits."""
    logits = step(list(settings.prompt))
    no_speech = None
    if settings.no_speech_id is not None:
        no_speech = float(np.exp(_log_softmax(logits[0])[settings.no_speech_id]))
    tokens: list[int] = []
    logprob_sum = 0.0
    row = logits[-1]
    for i in range(max_new_tokens):
        row = row.astype(np.float32, copy=True)
        if settings.suppress:
            row[list(settings.suppress)] = -np.inf
        if i == 0 and settings.begin_suppress:
            row[list(settings.begin_suppress)] = -np.inf
        token = int(np.argmax(row))
        logprob_sum += float(_log_softmax(row)[token])
        if token == settings.eos_id:
            return DecodeResult(tokens, logprob_sum / (len(tokens) + 1), no_speech, False, i + 1)
        tokens.append(token)
        if i + 1 < max_new_tokens:
            row = step([token])[-1]
    return DecodeResult(tokens, logprob_sum / max(len(tokens), 1), no_speech, True, max_new_tokens)


def compression_ratio(text: str) -> float:
    """Whisper's repetition signal: text bytes over zlib-compressed bytes (above ~2.4 means loops)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0
