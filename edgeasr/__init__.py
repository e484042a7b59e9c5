"""edgeasr: quantize Whisper and Moonshine after training, measure the cost, run them live on small CPUs."""

__version__ = "0.1.0"
