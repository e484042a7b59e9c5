"""OnnxBackend: a bundle run by ONNX Runtime with numpy and tokenizers only (never torch).

Per segment: features → encoder → cross-attention K/V (once) → greedy decoding with the shared
`edgeasr.decoding` loop, the decoder step carrying its self-attention KV cache as explicit tensors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeasr.decoding import DecodeResult, DecodeSettings, greedy_decode
from edgeasr.errors import CheckpointError
from edgeasr.metrics.layers import LayerInfo, ModelDims
from edgeasr.runtime.bundle import ARCHIVE_SUFFIX, BundleMeta, check_graph_inputs, read_bundle, unpack_archive
from edgeasr.runtime.features import LogMelSettings, moonshine_waveform, whisper_log_mel
from edgeasr.runtime.sessions import cpu_session_options


@dataclass(frozen=True)
class MemorySettings:
    """How ONNX Runtime holds a run's intermediate tensors: peak resident memory against allocation work."""

    arena: bool | None = None
    """CPU memory arena: grows in doubling chunks and never returns them. None = off where every run has the
    same shapes (Whisper's 30 s window: the C heap reuses the freed buffers; peak growth 142 MB against 210 MB
    with the arena, W4 whisper-tiny.en), on where shapes follow the audio (Moonshine: the C heap fragments
    over varying sizes, 386 MB against 206 MB with the arena)."""
    memory_pattern: bool = False
    """One pre-planned block per run sized for the run's peak (fewer allocations, a higher and lasting peak)."""

    def arena_for(self, family: str) -> bool:
        return self.arena if self.arena is not None else family != "whisper"


def _session(path: Path, threads: int | None, memory: MemorySettings, family: str):
    import onnxruntime as ort

    options = cpu_session_options(threads)
    options.enable_cpu_mem_arena = memory.arena_for(family)
    options.enable_mem_pattern = memory.memory_pattern
    options.log_severity_level = 3  # its constant-folding notices about exporter helper ops are not actionable
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise CheckpointError(f"ONNX Runtime cannot load {path}: {exc}") from exc


class OnnxBackend:
    """The deployment backend behind `Engine.load(bundle)`."""

    kind = "onnx"

    def __init__(self, meta: BundleMeta, threads: int | None = None, memory: MemorySettings = MemorySettings()) -> None:
        from tokenizers import Tokenizer

        self.meta = meta
        self.family = meta.family
        self.memory = memory
        self.sessions = {name: _session(path, threads, memory, meta.family) for name, path in meta.graphs.items()}
        check_graph_inputs(meta, {k: [i.name for i in s.get_inputs()] for k, s in self.sessions.items()})
        self.tokenizer = Tokenizer.from_file(str(meta.directory / meta.data["tokenizer"]))
        self.settings = DecodeSettings.from_configs(self.family, meta.data["generation"], meta.data["config"])
        self.max_segment_seconds = float(meta.data["max_segment_seconds"])
        features = meta.data["features"]
        if self.family == "whisper":
            self.mel_filters = np.load(meta.directory / features["mel_filters"])
            self.log_mel = LogMelSettings(features["n_fft"], features["hop_length"], features["chunk_samples"])
        self.decoder_inputs = [i.name for i in self.sessions["decoder"].get_inputs()]
        self.past_names = [n for n in self.decoder_inputs if n.startswith("past_")]
        self.cross_names = [n for n in self.decoder_inputs if n.startswith("cross_")]

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None, memory: MemorySettings = MemorySettings()) -> "OnnxBackend":
        """Load a bundle directory or `.edgeasr.tar` archive (extracted once into the cache)."""
        path = Path(path).expanduser()
        if path.name.endswith(ARCHIVE_SUFFIX) and path.is_file():
            from edgeasr.paths import cache_dir

            path = unpack_archive(path, cache_dir("bundles"))
        return cls(read_bundle(path), threads, memory)

    def features(self, audio: np.ndarray) -> np.ndarray:
        if self.family == "whisper":
            return whisper_log_mel(audio, self.mel_filters, self.log_mel)
        return moonshine_waveform(audio)

    def encode(self, audio: np.ndarray) -> list[np.ndarray]:
        """Cross-attention K/V of every decoder layer for one segment."""
        states = self.sessions["encoder"].run(None, {"features": self.features(audio)})[0]
        return self.sessions["cross_kv"].run(None, {"encoder_states": states})

    def decoder_step(self, cross: list[np.ndarray]) -> Callable[[list[int]], np.ndarray]:
        """A fresh decoding state: `step(new_tokens)` returns their logits and extends the KV cache."""
        s = self.meta.shapes
        empty = np.zeros((1, s["heads"], 0, s["head_dim"]), np.float32)
        feeds = dict(zip(self.cross_names, cross))
        feeds.update({name: empty for name in self.past_names})
        decoder = self.sessions["decoder"]

        def step(new_tokens: list[int]) -> np.ndarray:
            feeds["input_ids"] = np.array([new_tokens], dtype=np.int64)
            logits, *present = decoder.run(None, feeds)
            feeds.update(zip(self.past_names, present))
            return logits[0]

        return step

    def decode(self, cross: list[np.ndarray], max_new_tokens: int) -> DecodeResult:
        return greedy_decode(self.decoder_step(cross), self.settings, max_new_tokens)

    def run(self, audio: np.ndarray) -> tuple[DecodeResult, float, float]:
        start = time.perf_counter()
        cross = self.encode(audio)
        middle = time.perf_counter()
        result = self.decode(cross, self.settings.max_new_tokens(audio.size / 16000))
        return result, middle - start, time.perf_counter() - middle

    def detokenize(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True).strip()

    @property
    def source(self) -> str:
        return str(self.meta.directory)

    def layer_infos(self) -> list[LayerInfo]:
        """The cost model's layer records, written by the exporter (see `edgeasr.metrics.cost`)."""
        return [LayerInfo(**record) for record in self.meta.data["cost"]["layers"]]

    def model_dims(self) -> ModelDims:
        return ModelDims(**self.meta.data["cost"]["dims"])

    def describe(self) -> dict:
        data = self.meta.data
        return {"backend": self.kind, "family": self.family, "source": str(self.meta.directory),
                "label": data["label"], "content_hash": data["content_hash"], "sizes": data["sizes"],
                "weights": {k: v for k, v in data["weights"].items() if k != "layers"}}
