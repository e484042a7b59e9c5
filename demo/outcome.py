"""Why a side of a comparison shows no text: silence (the voice detector found no speech) or a model
that produced nothing usable on detected speech. A user must be able to tell a broken recipe from a
quiet recording."""

from __future__ import annotations

import numpy as np

from edgeasr.audio import voiced_seconds
from edgeasr.engine import Engine
from edgeasr.metrics.wer import normalize


def voiced(engine: Engine, audio: np.ndarray) -> float:
    """Seconds of speech in 16 kHz `audio` by the engine's own voice-detector gate."""
    return voiced_seconds(audio, engine.guard.vad_aggressiveness)


def no_text_reason(engine: Engine, audio: np.ndarray, speech_seconds: float) -> str:
    """What to show instead of a transcript when streaming completed no line.

    On detected speech the clip is decoded once more in one piece (only in this failure case), so the
    message can say whether the model output nothing or the hallucination guard dropped what it output.
    """
    if speech_seconds < engine.guard.min_voiced_seconds:
        return f"(no speech detected: the voice detector found {speech_seconds:.2f} s of speech in this audio)"
    transcript = engine.transcribe(audio)
    if normalize(transcript.text):
        return (f"(no line completed while streaming {speech_seconds:.1f} s of detected speech; decoded in one "
                f"piece the model says: \"{transcript.text}\")")
    if transcript.text:
        return (f"(the model output no words on {speech_seconds:.1f} s of detected speech, only "
                f"\"{transcript.text[:60]}\": this recipe fails on this audio, it is not silence)")
    dropped = next((s.dropped for s in transcript.segments if s.dropped), None)
    if dropped:
        return (f"(the model's output on {speech_seconds:.1f} s of detected speech was dropped by the "
                f"hallucination guard: {dropped}; this recipe fails on this audio)")
    return (f"(the model output no words on {speech_seconds:.1f} s of detected speech: this recipe fails on "
            f"this audio, it is not silence)")
