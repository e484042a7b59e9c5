"""Bundle → transcripts with onnxruntime + numpy + tokenizers; importing this never imports torch."""

from edgeasr.runtime.backend import MemorySettings, OnnxBackend
from edgeasr.runtime.bundle import BundleMeta, read_bundle

__all__ = ["MemorySettings", "OnnxBackend", "BundleMeta", "read_bundle"]
