"""Exceptions with messages that say what was wrong and what to do about it."""


class EdgeASRError(Exception):
    """Base class of every error edgeasr raises on purpose."""


class UnknownModelError(EdgeASRError, KeyError):
    """A model name that is not in the zoo and not a directory."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class CacheCorruptedError(EdgeASRError):
    """A cached file whose checksum no longer matches what was written."""


class AudioError(EdgeASRError, ValueError):
    """Audio that cannot be transcribed as given (empty, NaN, wrong shape...)."""


class PackageFetchError(EdgeASRError):
    """A registry package could not be downloaded."""


class DatasetError(EdgeASRError):
    """An evaluation or calibration set that is missing or malformed."""


class QuantizationError(EdgeASRError, ValueError):
    """An unsupported or inconsistent quantization request."""


class CheckpointError(EdgeASRError):
    """A quantized checkpoint or bundle that is corrupt or does not match its recipe."""
