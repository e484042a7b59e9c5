"""Post-training quantization: recipes, the shared calibration walk, the methods and the quantized layers."""
