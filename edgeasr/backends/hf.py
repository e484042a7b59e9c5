"""The research backend: a `transformers` Whisper or Moonshine model (FP or fake-quantized) on torch."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from edgeasr.backends.layers import describe_layers, model_dims
from edgeasr.decoding import DecodeResult, DecodeSettings, greedy_decode
from edgeasr.metrics.layers import LayerInfo, ModelDims

log = logging.getLogger(__name__)


def family_of(config) -> str:
    model_type = getattr(config, "model_type", "")
    if model_type in ("whisper", "moonshine"):
        return model_type
    raise ValueError(f"edgeasr supports Whisper and Moonshine models, not {model_type!r}")


class HFBackend:
    """Wraps a `transformers` model with its feature extractor, tokenizer and decode settings."""

    kind = "torch"

    def __init__(self, model, feature_extractor, tokenizer, source: str) -> None:
        self.model = model.eval()
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.source = source
        self.family = family_of(model.config)
        self.settings = DecodeSettings.from_configs(
            self.family, model.generation_config.to_dict(), model.config.to_dict())

    @classmethod
    def from_pretrained(cls, location: str | Path, source: str | None = None) -> "HFBackend":
        from transformers import AutoConfig, AutoFeatureExtractor, AutoTokenizer

        config = AutoConfig.from_pretrained(location)
        family = family_of(config)
        if family == "whisper":
            from transformers import WhisperForConditionalGeneration as model_cls
        else:
            from transformers import MoonshineForConditionalGeneration as model_cls
        model = model_cls.from_pretrained(location, attn_implementation="sdpa", dtype=torch.float32)
        return cls(model, AutoFeatureExtractor.from_pretrained(location), AutoTokenizer.from_pretrained(location),
                   source or str(location))

    @property
    def max_segment_seconds(self) -> float:
        # Whisper sees a 30 s window; Moonshine drifts into repetition on long inputs (FACTS: >~30 s).
        return 28.0 if self.family == "whisper" else 20.0

    def features(self, audio: np.ndarray) -> torch.Tensor:
        if self.family == "whisper":
            return self.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
        return torch.from_numpy(audio)[None, :]

    @torch.inference_mode()
    def encode(self, audio: np.ndarray):
        return self.model.model.encoder(self.features(audio))

    @torch.inference_mode()
    def decode(self, encoder_output, max_new_tokens: int) -> DecodeResult:
        cache = None

        def step(new_tokens: list[int]) -> np.ndarray:
            nonlocal cache
            out = self.model(encoder_outputs=encoder_output, decoder_input_ids=torch.tensor([new_tokens]),
                             cache=cache, use_cache=True)
            cache = out.cache
            return out.logits[0].float().numpy()

        return greedy_decode(step, self.settings, max_new_tokens)

    def run(self, audio: np.ndarray) -> tuple[DecodeResult, float, float]:
        """Encode and greedily decode one segment; return the result with encode and decode seconds."""
        start = time.perf_counter()
        encoded = self.encode(audio)
        middle = time.perf_counter()
        result = self.decode(encoded, self.settings.max_new_tokens(audio.size / 16000))
        return result, middle - start, time.perf_counter() - middle

    def detokenize(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True).strip()

    def layer_infos(self) -> list[LayerInfo]:
        """The cost model's layer records, read off the (possibly quantized) torch modules."""
        return describe_layers(self.model)

    def model_dims(self) -> ModelDims:
        return model_dims(self.model)

    def describe(self) -> dict:
        return {"backend": self.kind, "family": self.family, "source": self.source,
                "params": sum(p.numel() for p in self.model.parameters())}
