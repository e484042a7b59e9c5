"""Evaluation and calibration sets that can be built offline, and the manifests that describe them."""

from edgeasr.data.asterisk import clean_transcript
from edgeasr.data.build import BUILDERS, OFFLINE_SETS, build_dataset, is_built
from edgeasr.data.manifest import Utterance, load_manifest, manifest_path, write_manifest
from edgeasr.data.sets import SETS

__all__ = ["BUILDERS", "OFFLINE_SETS", "SETS", "Utterance", "build_dataset", "clean_transcript", "is_built",
           "load_manifest", "manifest_path", "write_manifest"]
