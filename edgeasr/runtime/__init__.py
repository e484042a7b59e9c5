"""Bundle → transcripts with onnxruntime + numpy + tokenizers; importing this never imports torch."""

from edgeasr.runtime.backend import OnnxBackend
from edgeasr.runtime.bundle import BundleMeta, read_bundle

__all__ = ["OnnxBackend", "BundleMeta", "read_bundle"]
