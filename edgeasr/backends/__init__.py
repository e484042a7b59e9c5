"""Backends run one audio segment through a model: `transformers` (torch) or an ONNX bundle."""
