"""One Engine for every front end: load a model (FP, quantized checkpoint or bundle), transcribe audio."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from edgeasr.audio import SAMPLE_RATE, energy_spread_db, prepare_audio, split_on_silence, voiced_seconds
from edgeasr.decoding import DecodeResult, compression_ratio
from edgeasr.metrics.layers import LayerInfo, ModelDims
from edgeasr.quant.checkpoint_files import META as CHECKPOINT_META
from edgeasr.runtime.bundle import ARCHIVE_SUFFIX
from edgeasr.runtime.bundle import META as BUNDLE_META
from edgeasr.transcript import Segment, Transcript

log = logging.getLogger(__name__)


class Backend(Protocol):
    """What the Engine, the cost model and the front ends need of a model runner (torch or bundle)."""

    kind: str
    family: str
    max_segment_seconds: float
    source: str
    """Where the weights came from (a directory, a zoo name or a Hub id): on-disk size when a directory."""

    def run(self, audio: np.ndarray) -> tuple[DecodeResult, float, float]: ...
    def detokenize(self, tokens: list[int]) -> str: ...
    def describe(self) -> dict: ...
    def layer_infos(self) -> list[LayerInfo]: ...
    def model_dims(self) -> ModelDims: ...


@dataclass(frozen=True)
class GuardOptions:
    """Thresholds that keep silence and noise from turning into invented text."""

    no_speech_threshold: float = 0.6
    """Whisper: drop when P(no speech) is above this and the text is also unlikely."""
    logprob_threshold: float = -1.0
    """Average token log-probability under which a segment counts as unlikely."""
    compression_ratio_threshold: float = 2.4
    """Drop text that compresses better than this (repetition loops)."""
    min_voiced_seconds: float = 0.12
    """Segments with less speech than this (webrtcvad) are not decoded: both families invent text on silence."""
    vad_aggressiveness: int = 2
    """webrtcvad mode (0-3) of that gate."""
    min_energy_spread_db: float = 3.0
    """Segments whose speech-band energy varies less than this (p10→p90 over 20 ms frames, dB) are steady
    noise or tones (webrtcvad passes both) and are not decoded: Moonshine has no no-speech probability."""


class Engine:
    """Transcribes audio with one model. Create it with `Engine.load`."""

    def __init__(self, backend: Backend, name: str, guard: GuardOptions | None = None) -> None:
        self.backend = backend
        self.name = name
        self.guard = guard or GuardOptions()
        self.why: str | None = None
        """Why the torch engine runs rather than a bundle (set by `edgeasr.resolver`)."""

    @classmethod
    def load(cls, name_or_path: str | Path, guard: GuardOptions | None = None) -> "Engine":
        """Load a zoo name, a local `transformers` directory, a Hub id, a quantized checkpoint or a bundle."""
        path = Path(name_or_path).expanduser()
        if (path / BUNDLE_META).exists() or path.name.endswith(ARCHIVE_SUFFIX):
            from edgeasr.runtime import OnnxBackend

            return cls(OnnxBackend.load(path), path.name, guard)
        if path.suffix == ".safetensors" or (path / CHECKPOINT_META).exists():
            from edgeasr.quant.checkpoint import load_checkpoint
            from edgeasr.backends.hf import HFBackend

            model, processor_dir, recipe = load_checkpoint(path)
            from transformers import AutoFeatureExtractor, AutoTokenizer

            backend = HFBackend(model, AutoFeatureExtractor.from_pretrained(processor_dir),
                                AutoTokenizer.from_pretrained(processor_dir), str(path))
            return cls(backend, recipe.label, guard)
        from edgeasr.backends.hf import HFBackend
        from edgeasr.zoo import resolve_model_dir

        location, _ = resolve_model_dir(name_or_path)
        return cls(HFBackend.from_pretrained(location, str(name_or_path)), str(name_or_path), guard)

    @property
    def kind(self) -> str:
        """"bundle" (ONNX Runtime on a packed bundle, what a board runs) or "torch" (transformers, fake-quant)."""
        return "bundle" if self.backend.kind == "onnx" else "torch"

    @property
    def family(self) -> str:
        return self.backend.family

    def _guard(self, text: str, result: DecodeResult) -> str | None:
        g = self.guard
        if (result.no_speech_prob is not None and result.no_speech_prob > g.no_speech_threshold
                and result.avg_logprob < g.logprob_threshold):
            return f"no speech (p={result.no_speech_prob:.2f}, avg logprob {result.avg_logprob:.2f})"
        if len(text) > 20 and compression_ratio(text) > g.compression_ratio_threshold:
            return f"repetition (compression ratio {compression_ratio(text):.2f})"
        return None

    def transcribe_segment(self, audio: np.ndarray, offset: float = 0.0) -> tuple[Segment, float, float]:
        end = offset + audio.size / SAMPLE_RATE
        voiced = voiced_seconds(audio, self.guard.vad_aggressiveness)
        if voiced < self.guard.min_voiced_seconds:
            return Segment(offset, end, "", [], 0.0, None, 0.0, f"no speech (VAD: {voiced:.2f} s voiced)"), 0.0, 0.0
        spread = energy_spread_db(audio)
        if spread < self.guard.min_energy_spread_db:
            return Segment(offset, end, "", [], 0.0, None, 0.0,
                           f"steady noise or tone (energy varies {spread:.1f} dB)"), 0.0, 0.0
        result, enc_s, dec_s = self.backend.run(audio)
        text = self.backend.detokenize(result.tokens)
        dropped = self._guard(text, result)
        if dropped:
            log.debug("guard dropped %r: %s", text, dropped)
        segment = Segment(offset, end, "" if dropped else text, result.tokens,
                          result.avg_logprob, result.no_speech_prob, compression_ratio(text), dropped)
        return segment, enc_s, dec_s

    def transcribe(self, audio: np.ndarray | str | Path, sample_rate: int = SAMPLE_RATE) -> Transcript:
        """Transcribe a path or an array (any rate, mono or stereo); long audio is cut on silence, and a long
        opening pause is cut to half a second (`split_on_silence`)."""
        samples = prepare_audio(audio, sample_rate)
        segments, enc_total, dec_total = [], 0.0, 0.0
        for start, end in split_on_silence(samples, self.backend.max_segment_seconds):
            segment, enc_s, dec_s = self.transcribe_segment(samples[start:end], start / SAMPLE_RATE)
            segments.append(segment)
            enc_total += enc_s
            dec_total += dec_s
        text = " ".join(s.text for s in segments if s.text)
        tokens = [t for s in segments if s.text for t in s.tokens]
        transcript = Transcript(text, tokens, samples.size / SAMPLE_RATE, enc_total, dec_total, segments)
        if enc_total + dec_total > 0:  # when the guards skipped every segment the model never ran: no cost
            transcript.cost = self.estimate_cost(transcript.audio_seconds, len(tokens) + len(segments))
        return transcript

    def transcribe_batch(self, items: list[np.ndarray | str | Path], progress: bool = True) -> list[Transcript]:
        from tqdm import tqdm

        return [self.transcribe(item) for item in tqdm(items, desc=f"transcribe {self.name}", disable=not progress)]

    def estimate_cost(self, audio_seconds: float, n_tokens: int):
        """Memory I/O and BOPs of one utterance for the model as it runs (None until the cost model is wired)."""
        try:
            from edgeasr.metrics.cost import estimate_cost
        except ImportError:
            return None
        return estimate_cost(self, audio_seconds, n_tokens)

    def describe(self) -> dict:
        why = {"engine_reason": self.why} if self.why else {}
        return {"name": self.name, "engine": self.kind, **why, **self.backend.describe()}
