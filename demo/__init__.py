"""Gradio demo of edgeasr: live transcription, A/B comparison of quantization recipes, the study's results.

Decoding, quantization and metrics all come from `edgeasr`; this package only wires them to a UI.
"""
