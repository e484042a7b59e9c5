"""Tune for my voice: calibrate a bundle on 30-60 s of the user's own speech (no transcript), then compare it
with the generic recipe of the same bits or budget on new speech.

The recording goes through exactly what `edgeasr quantize --calib-dir` does (`quant.user_audio`): it is saved
once into the cache, cut into pieces at quiet points, and calibrates the method without labels. Both bundles
come from the one resolver (quantized and exported once, cached by recipe). The generic side is the recipe
every user gets (the default calibration set), the same one the A/B tab runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np

from edgeasr.audio import SAMPLE_RATE, load_audio, voiced_seconds, write_wav
from edgeasr.metrics.wer import normalize, utterance_wer
from edgeasr.paths import cache_dir
from edgeasr.quant.recipe import CalibrationOptions, Recipe
from edgeasr.resolver import resolve

from ..engines import model_choices
from ..feedback import user_errors
from ..inputs import ClipError, load_clip
from ..preparing import T, ticking
from ..samples import sample_clips

log = logging.getLogger(__name__)

METHODS = ("gptq", "awq", "rtn")
"""Methods that quantize each layer at its own bits; GPTQ and AWQ fit their grids to the calibration audio."""
BITS = (4, 3, 2, 8)
MIN_SECONDS = 15.0
"""Shortest voice recording accepted (30-60 s is advised): less gives GPTQ a Hessian of too few rows."""
MIN_SPEECH_SECONDS = 8.0
"""Least detected speech in it: a muted microphone or a room recording is refused, not calibrated on."""
MAX_SECONDS = 120.0
"""Longer recordings are cut here: calibration time grows with the audio and 1-2 minutes hold enough of a voice."""
OWN_TEST = "(your own recording or upload)"


@dataclass(frozen=True)
class VoiceRecording:
    """The user's calibration recording as read, and where its 16 kHz mono copy lies in the cache."""

    folder: Path
    seconds: float
    speech_seconds: float
    note: str
    """What was done to it (resampled, downmixed, cut), in the user's words."""


def check_voice(path: str | None) -> VoiceRecording:
    """Read and check the voice recording; `ClipError` with a message for the user when it cannot calibrate."""
    if path is None:
        raise ClipError(f"No voice recording: record or upload {MIN_SECONDS:.0f}-120 s of yourself speaking "
                        "(30-60 s is best) first.")
    audio = load_clip(path)  # any rate, mono or stereo → 16 kHz mono, or one message
    raw, rate = load_audio(path, Path(path).name)
    seconds = audio.size / SAMPLE_RATE
    if seconds < MIN_SECONDS:
        raise ClipError(f"The recording is {seconds:.1f} s long: record at least {MIN_SECONDS:.0f} s of your voice "
                        "(30-60 s is best) so the calibration sees enough of it.")
    done = []
    if rate != SAMPLE_RATE:
        done.append(f"resampled from {rate / 1000:g} kHz to 16 kHz")
    if raw.shape[1] > 1:
        done.append(f"{raw.shape[1]} channels mixed down to mono")
    if seconds > MAX_SECONDS:
        audio = audio[: int(MAX_SECONDS * SAMPLE_RATE)]
        done.append(f"cut to its first {MAX_SECONDS:.0f} s")
    speech = voiced_seconds(audio)
    if speech < MIN_SPEECH_SECONDS:
        raise ClipError(f"Only {speech:.1f} s of speech detected in {audio.size / SAMPLE_RATE:.1f} s: is the "
                        f"microphone muted or the recording silent? Speak for at least {MIN_SPEECH_SECONDS:.0f} s.")
    folder = cache_dir("voice") / hashlib.sha256(audio.tobytes()).hexdigest()[:12]
    if not (folder / "recording.wav").exists():
        folder.mkdir(parents=True, exist_ok=True)
        write_wav(folder / "recording.wav", audio)
    note = f"{audio.size / SAMPLE_RATE:.1f} s, {speech:.1f} s of speech" + (f" ({', '.join(done)})" if done else "")
    return VoiceRecording(folder, audio.size / SAMPLE_RATE, speech, note)


def recipes(recording: VoiceRecording, model: str, method: str, bits: int,
            budget_mb: float | None) -> tuple[Recipe, Recipe]:
    """(tuned, generic): the same method and bits (or per-layer bits under the same budget), calibrated on the
    user's recording or on the default set. Under a budget each side's layer sensitivity is measured on its own
    calibration audio, so the two may choose different bits."""
    from edgeasr.quant.user_audio import read_user_audio

    user = read_user_audio(recording.folder, label="your recording")
    generic = Recipe(model, method, int(bits))
    tuned = dataclasses.replace(generic, calibration=CalibrationOptions(str(user.manifest), n_clips=user.pieces))
    if not budget_mb:
        return tuned, generic
    from edgeasr.quant.mixed import BudgetOptions, plan

    return tuple(plan(r, BudgetOptions(budget_mb=float(budget_mb)))[0] for r in (tuned, generic))


@dataclass(frozen=True)
class Side:
    """One bundle's result on the test speech."""

    name: str
    recipe: Recipe
    text: str
    total_bytes: int | None
    engine: str
    seconds: float


def _wer(reference: str, text: str) -> str:
    return f"{100 * utterance_wer(reference, text).wer:.1f} %" if normalize(reference) else "— (no reference)"


def _bits(recipe: Recipe) -> str:
    if not recipe.layer_bits:
        return f"W{recipe.w_bits} every layer"
    widths = list(recipe.layer_bits.values())
    return "mixed: " + ", ".join(f"{widths.count(b)}×{b}-bit" for b in sorted(set(widths)))


def table(sides: list[Side], reference: str, calibration: list[str]) -> str:
    rows = [("bundle", lambda s: s.recipe.label), ("calibrated on", lambda s: calibration[sides.index(s)]),
            ("weights", lambda s: _bits(s.recipe)),
            ("bundle size", lambda s: f"{s.total_bytes / 1e6:.2f} MB" if s.total_bytes else "?"),
            ("WER on the test speech", lambda s: _wer(reference, s.text)),
            ("engine, decode time", lambda s: f"{s.engine}, {s.seconds:.2f} s")]
    lines = ["| | " + " | ".join(s.name for s in sides) + " |", "|---|" + "---|" * len(sides)]
    lines += [f"| {title} | " + " | ".join(value(s) for s in sides) + " |" for title, value in rows]
    return "\n".join(lines)


def _transcribe(name: str, recipe: Recipe, audio: np.ndarray, progress: list[str]) -> Side:
    from edgeasr.metrics.cost import model_size

    engine = resolve(recipe, progress=lambda _fraction, message: progress.append(message))
    transcript = engine.transcribe(audio)
    return Side(name, recipe, transcript.text, model_size(engine).total_bytes, engine.describe()["engine"],
                transcript.seconds)


def _status_only(lines: Generator[str, None, T]) -> Generator[tuple, None, T]:
    """Forward `ticking`'s status lines as outputs that change only the status; return what it returns."""
    try:
        while True:
            yield (next(lines), gr.skip(), gr.skip(), gr.skip())
    except StopIteration as stop:
        return stop.value


def tune_and_compare(voice: str | None, model: str, method: str, bits: int, budget_mb: float | None,
                     test: str | None, reference: str) -> Iterator[tuple[str, str, str, str]]:
    """Yields (status, tuned transcript, generic transcript, table) while the bundles are built and run."""
    try:
        recording = check_voice(voice)
        test_audio = load_clip(test)
    except ClipError as exc:
        raise gr.Error(str(exc)) from exc
    yield f"Your recording: {recording.note}. Planning the recipes…", "", "", ""
    with user_errors("Tune for my voice"):
        tuned, generic = yield from _status_only(ticking(
            lambda: recipes(recording, model, method, bits, budget_mb),
            lambda t: f"Your recording: {recording.note}. Measuring layer sensitivity for the budget: {t:.0f} s"
            if budget_mb else f"Your recording: {recording.note}. Reading it…"))
        calibration = [f"your recording ({recording.note}), no transcript",
                       f"{generic.calibration.dataset} (the default set, {generic.calibration.n_clips} sequences)"]
        sides: list[Side] = []
        for name, recipe in (("tuned on your voice", tuned), ("generic", generic)):
            steps = [f"loading or building the {name} bundle"]
            side = yield from _status_only(ticking(lambda r=recipe, n=name: _transcribe(n, r, test_audio, steps),
                                      lambda t, n=name: f"**{n}**: {steps[-1]} — {t:.0f} s so far (quantize and "
                                      "export happen once per recipe, then it is cached)"))
            sides.append(side)
            yield (f"{name} done.", sides[0].text, sides[1].text if len(sides) > 1 else "…",
                   table(sides, reference, calibration))
    note = "" if method != "rtn" or budget_mb else (
        "\n\n*RTN does not use calibration audio: at uniform bits both bundles hold the same weights. Pick GPTQ or "
        "AWQ, or give a budget in MB (the bits per layer are then chosen on each side's audio).*")
    yield "Done.", sides[0].text, sides[1].text, table(sides, reference, calibration) + note


def describe_voice(path: str | None) -> str:
    """The note under the voice recording as soon as it is recorded or uploaded: what will be used, or why not."""
    if path is None:
        return ""
    try:
        return f"Your recording: {check_voice(path).note}. Ready to tune."
    except ClipError as exc:
        return f"⚠️ {exc}"


def pick_test(sample_id: str) -> tuple:
    clip = sample_clips().get(sample_id)
    return (gr.update(), gr.update()) if clip is None else (str(clip.audio), clip.text)


def build(default_model: str) -> None:
    gr.Markdown(
        "Record or upload **30-60 s of yourself speaking** (read anything aloud; no transcript needed), pick the "
        "bits or a size budget, and press the button: a bundle is quantized and exported with your recording as "
        "its calibration audio (`edgeasr quantize --calib-dir`), then compared with the generic recipe of the same "
        "size on new speech. The first run of a recipe quantizes and exports (a minute or more); both are cached.")
    clips = sample_clips()
    first = next(iter(clips.values()), None)
    with gr.Row():
        with gr.Column():
            voice = gr.Audio(sources=["upload", "microphone"], type="filepath", elem_id="voice-recording",
                             label=f"Your voice ({MIN_SECONDS:.0f}-120 s; any rate, mono or stereo)")
            voice_notice = gr.Markdown(elem_id="voice-notice")
            with gr.Row():
                model = gr.Dropdown(model_choices(default_model), value=default_model, label="Model",
                                    elem_id="voice-model")
                method = gr.Dropdown(list(METHODS), value=METHODS[0], label="Method", elem_id="voice-method")
            bits = gr.Radio(list(BITS), value=4, label="Weight bits", elem_id="voice-bits")
            budget = gr.Number(None, label="or a bundle budget in MB (10^6 bytes): bits per layer chosen to fit",
                               minimum=0, elem_id="voice-budget")
        with gr.Column():
            sample = gr.Dropdown([*clips, OWN_TEST], value=first.id if first else OWN_TEST, elem_id="voice-sample",
                                 label="New speech to compare on (not your calibration recording)")
            test = gr.Audio(str(first.audio) if first else None, sources=["upload", "microphone"], type="filepath",
                            label="Test speech", elem_id="voice-test")
            reference = gr.Textbox(first.text if first else "", lines=3, label="Reference text (for WER)",
                                   elem_id="voice-reference")
    run = gr.Button("Tune for my voice and compare", variant="primary", elem_id="voice-run")
    status = gr.Markdown(elem_id="voice-status")
    with gr.Row():
        tuned_text = gr.Textbox(label="Tuned on your voice", lines=3, elem_id="voice-text-tuned")
        generic_text = gr.Textbox(label="Generic recipe", lines=3, elem_id="voice-text-generic")
    result = gr.Markdown(elem_id="voice-table")

    for event in (voice.upload, voice.stop_recording):
        event(describe_voice, voice, voice_notice)
    sample.select(pick_test, sample, [test, reference])
    for event in (test.upload, test.stop_recording):
        event(lambda: (OWN_TEST, ""), None, [sample, reference])
    run.click(tune_and_compare, [voice, model, method, bits, budget, test, reference],
              [status, tuned_text, generic_text, result], show_progress="hidden")
