"""The catalogue of data sets: every name `edgeasr data build` knows and what each one stands for.

Plain data, importing nothing from the builders, so the manifest reader can name the known sets in
its error messages without importing the builders (which import it).
"""

from __future__ import annotations

OFFLINE_SETS: dict[str, str] = {
    "asterisk-en": "one US studio speaker, telephone prompts of 3+ words (1-73 s): the original study set",
    "asterisk-en-calib": "the same speaker's 1-2-word prompts (digits, letters, words): calibration only",
    "moonshine-samples": "two human-read clips (10 s, 44 s) from the moonshine-voice wheel",
    "tts-en": "five offline TTS voices (flite rms/awb/slt/kal, festival slt) reading Harvard lists 1-4: "
              "other voices than the calibration speaker",
    "tts-en-calib": "the same five voices reading Harvard lists 5-8: multi-voice calibration, no evaluation sentence",
    "codec2-calib": "codec2-examples: real voices over HF radio and 8 kHz codecs, untranscribed: calibration only",
    "longform-en": "5-25 s items joining asterisk-en prompts or tts-en sentences (one voice per item) with "
                   "natural pauses: long decodes, where quantized decoders end early",
    "noisy-en-20db": "48 asterisk-en / tts-en clips with white, pink or HF-radio noise at 20 dB SNR: a quiet office",
    "noisy-en-10db": "the same 48 clips at 10 dB SNR: a street, a car, a weak radio link",
    "reverb-en": "the same 48 clips through a synthetic room response (RT60 0.3-0.8 s): a far-field microphone",
    "reverb-en-192": "reverb-en's rooms on 96 asterisk-en and 96 tts-en clips: four times the clips, enough to tell "
                     "two methods apart where reverb-en's 48 cannot",
    "speed-en": "24 asterisk-en prompts at 0.9x and 1.1x speed, pitch kept: slow and fast talkers",
    "calib-mix": "the default calibration set: short and 5-25 s items from asterisk-en-calib, tts-en-calib and "
                 "codec2 radio speech, a third with noise, some reverberant; disjoint from every evaluation clip",
}
"""Sets built from registry packages with no network beyond the package clients, and what each stands for."""

HUB_SETS_INFO: dict[str, str] = {
    "librispeech-clean": "LibriSpeech test-clean (Open ASR Leaderboard), when the Hugging Face Hub is reachable",
    "librispeech-other": "LibriSpeech test-other (Open ASR Leaderboard), when the Hub is reachable",
    "tedlium": "TED-LIUM test (Open ASR Leaderboard), when the Hub is reachable",
    "voxpopuli": "VoxPopuli test (Open ASR Leaderboard), when the Hub is reachable",
    "ami": "AMI test (Open ASR Leaderboard), when the Hub is reachable",
    "earnings22": "Earnings-22 test (Open ASR Leaderboard), when the Hub is reachable",
    "gigaspeech": "GigaSpeech test (Open ASR Leaderboard), when the Hub is reachable",
    "spgispeech": "SPGISpeech test (Open ASR Leaderboard), when the Hub is reachable",
}

SETS: dict[str, str] = {**OFFLINE_SETS, **HUB_SETS_INFO}
"""Every known set name and its one-line description."""

DEPENDS: dict[str, tuple[str, ...]] = {
    "longform-en": ("asterisk-en", "tts-en"),
    "noisy-en-20db": ("asterisk-en", "tts-en", "codec2-calib"),
    "noisy-en-10db": ("asterisk-en", "tts-en", "codec2-calib"),
    "reverb-en": ("asterisk-en", "tts-en"),
    "reverb-en-192": ("asterisk-en", "tts-en"),
    "speed-en": ("asterisk-en",),
    "calib-mix": ("asterisk-en-calib", "tts-en-calib", "codec2-calib"),
}
"""Sets derived from other built sets: those are built first."""
