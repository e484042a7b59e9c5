"""Checkpoint → bundle: ONNX graphs whose linear layers are MatMulNBits built from the method's own codes."""

from edgeasr.export.bundle import ExportOptions, export_bundle, write_archive

__all__ = ["ExportOptions", "export_bundle", "write_archive"]
