"""Sample clips with reference texts (the `moonshine-samples` set), so the demo works without a microphone."""

from __future__ import annotations

import logging
from functools import lru_cache

from edgeasr.data import Utterance, build_dataset, load_manifest

log = logging.getLogger(__name__)

SAMPLE_SET = "moonshine-samples"


@lru_cache(maxsize=1)
def sample_clips() -> dict[str, Utterance]:
    """Clip id → utterance (audio path, reference text), building the set on first use; {} if unavailable."""
    try:
        build_dataset(SAMPLE_SET)
        return {u.id: u for u in load_manifest(SAMPLE_SET)}
    except Exception:  # noqa: BLE001 - without samples the demo still works with the microphone and uploads
        log.warning("sample set %s unavailable; only microphone and uploads will work", SAMPLE_SET, exc_info=True)
        return {}
