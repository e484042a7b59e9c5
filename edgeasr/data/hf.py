"""Open ASR Leaderboard test sets through Hugging Face `datasets`, when it is installed and the Hub is up.

The leaderboard's `hf-audio/esb-datasets-test-only-sorted` holds the test splits of LibriSpeech,
TED-LIUM, VoxPopuli, AMI, Earnings-22, GigaSpeech and SPGISpeech. `datasets` is deliberately not an
edgeasr dependency: on the offline boxes this project targets the Hub is unreachable and these
builders only explain that.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from edgeasr.data.manifest import MANIFEST_NAME, Utterance, write_manifest
from edgeasr.data.wavio import decode, to_16k, write_wav
from edgeasr.errors import DatasetError

ESB_REPO = "hf-audio/esb-datasets-test-only-sorted"


@dataclass(frozen=True)
class HubSet:
    config: str
    split: str = "test"


HUB_SETS: dict[str, HubSet] = {
    "librispeech-clean": HubSet("librispeech", "test.clean"),
    "librispeech-other": HubSet("librispeech", "test.other"),
    "tedlium": HubSet("tedlium"),
    "voxpopuli": HubSet("voxpopuli"),
    "ami": HubSet("ami"),
    "earnings22": HubSet("earnings22"),
    "gigaspeech": HubSet("gigaspeech"),
    "spgispeech": HubSet("spgispeech"),
}


def _open_stream(name: str, spec: HubSet):
    try:
        import datasets
    except ImportError:
        raise DatasetError(
            f"{name} comes from the Hugging Face Hub ({ESB_REPO}) and needs `pip install datasets`, "
            "plus a reachable Hub; offline, use asterisk-en, moonshine-samples or tts-en instead"
        ) from None
    try:
        stream = datasets.load_dataset(ESB_REPO, spec.config, split=spec.split, streaming=True)
        # Undecoded bytes: PyAV decodes them, so no torchcodec/soundfile backend is needed.
        return stream.cast_column("audio", datasets.Audio(decode=False))
    except Exception as exc:  # datasets raises connection, auth and offline-mode errors of many types
        raise DatasetError(
            f"could not open {ESB_REPO} ({spec.config}/{spec.split}) for {name}: the Hugging Face Hub is not "
            f"reachable from this machine or refused access ({type(exc).__name__}: {str(exc)[:300]}); "
            "offline, use asterisk-en, moonshine-samples or tts-en instead"
        ) from None


def _hub_builder(name: str) -> Callable[[Callable[[str], Path]], None]:
    spec = HUB_SETS[name]

    def build(open_set: Callable[[str], Path]) -> None:
        stream = _open_stream(name, spec)
        out = open_set(name)
        rows = []
        for index, sample in enumerate(tqdm(stream, desc=name, unit="clip")):
            audio = sample["audio"]
            data = audio.get("bytes")
            source = io.BytesIO(data) if data else audio["path"]
            samples, rate = decode(source)
            uid = str(sample.get("id") or f"{index:06d}").replace("/", "_")
            rel = f"audio/{index:06d}.wav"
            seconds = write_wav(out / rel, to_16k(samples, rate))
            rows.append(Utterance(id=uid, audio=rel, text=sample["text"], seconds=seconds,
                                  source=f"{ESB_REPO}:{spec.config}/{spec.split}"))
        if not rows:
            raise DatasetError(f"{ESB_REPO} {spec.config}/{spec.split} yielded no samples")
        write_manifest(out / MANIFEST_NAME, rows)

    build.__name__ = f"build_{name.replace('-', '_')}"
    return build


HUB_BUILDERS = {name: _hub_builder(name) for name in HUB_SETS}
