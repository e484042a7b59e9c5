"""File names of a quantized checkpoint, in a torch-free module so the engine can recognise a checkpoint
directory on an install without torch (and say so) instead of importing `quant.checkpoint`."""

FORMAT = "edgeasr-quant-1"
WEIGHTS = "model.safetensors"
META = "quant.json"
