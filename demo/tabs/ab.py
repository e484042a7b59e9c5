"""A/B tab: the same audio streamed through two recipes; transcripts, WER, word diff and costs side by side.

The reference text belongs to the audio: picking a sample (also the same one again) loads its text,
while a new upload or recording clears it, so WER is only shown against text the user kept or typed
for this audio. Unusable files get one message and are removed; the tab keeps working.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from functools import partial
from pathlib import Path

import gradio as gr

from edgeasr.audio import SAMPLE_RATE
from edgeasr.engine import Engine
from edgeasr.metrics.wer import normalize, utterance_wer
from edgeasr.stream import SessionOptions

from ..diff import COLOR_MAP, word_diff
from ..engines import BIT_CHOICES, FP, EngineKey, bits_picker_props, method_choices, model_choices
from ..estimates import announce
from ..facts import facts, is_loaded
from ..feedback import user_errors
from ..inputs import ClipError, load_clip
from ..outcome import no_text_reason, voiced
from ..preparing import preparing
from ..readouts import Column, readout, table
from ..samples import sample_clips
from ..streaming import Transcriber, replay

OWN_AUDIO = "(your own recording or upload)"
AB_OPTIONS = SessionOptions(partials=False)
"""Finals only: the comparison is about the final text and its cost, and partials would double the wait."""
SAMPLE_NOTE = "Reference: the transcript of the sample **{name}**."
NEW_AUDIO_NOTE = ("New audio: the reference text was cleared (it belonged to the previous clip). Type what is "
                  "said to get WER, or compare without it.")
NO_REFERENCE = "*No reference text for this audio: type one (or pick a sample) to get WER; B is diffed against A.*"

Outputs = tuple


def pick_sample(sample_id: str) -> tuple:
    """A sample (picked again or for the first time) loads its audio and its reference text."""
    clip = sample_clips().get(sample_id)
    if clip is None:
        return gr.update(), gr.update(), ""
    return str(clip.audio), clip.text, SAMPLE_NOTE.format(name=sample_id)


def new_audio(path: str | None) -> tuple:
    """An upload or a recording: the reference no longer applies; an unusable file is removed with one message."""
    if path is None:
        return gr.update(), OWN_AUDIO, "", ""
    try:
        load_clip(path)
    except ClipError as exc:
        return None, OWN_AUDIO, "", f"⚠️ {exc}"
    return gr.update(), OWN_AUDIO, "", NEW_AUDIO_NOTE


def recipe_note(model: str, method: str, bits: int, results_dir: Path) -> str:
    """Under each side's pickers: how long the recipe takes the first time, unless it is ready."""
    key = EngineKey.of(model, method, bits)
    if is_loaded(key):
        return f"{key.label}: loaded."
    return announce(key, results_dir) or f"{key.label}: loads in seconds."


def _status_only(lines: Generator[str, None, Engine]) -> Generator[Outputs, None, Engine]:
    """Forward status lines as outputs that change nothing but the status; return what `lines` returns."""
    try:
        while True:
            yield (gr.skip(),) * 5 + (next(lines),)
    except StopIteration as stop:
        return stop.value


def _wer(reference: str, text: str) -> float | None:
    return utterance_wer(reference, text).wer if normalize(reference) else None


def _diff_against(reference: str, side: Transcriber, other: Transcriber | None) -> list:
    """Against the reference when there is one, else B against A (so differences still stand out)."""
    if normalize(reference):
        return word_diff(reference, side.text)
    if other is not None:
        return word_diff(other.text, side.text)
    return [(normalize(side.text), None)]


def compare(path: str | None, reference: str, a_model: str, a_method: str, a_bits: int,
            b_model: str, b_method: str, b_bits: int, results_dir: Path) -> Iterator[Outputs]:
    """Stream the audio through A, then B (one after the other, so their timings do not interfere).

    Yields (text A, diff A, text B, diff B, table, status); while a side prepares only the status changes.
    """
    try:
        audio = load_clip(path)
    except ClipError as exc:
        raise gr.Error(str(exc)) from exc
    keys = EngineKey.of(a_model, a_method, a_bits), EngineKey.of(b_model, b_method, b_bits)
    done: list[tuple[Transcriber, Column, str]] = []
    speech: float | None = None
    yield "", [], "", [], "", "A: starting…"
    for i, key in enumerate(keys):
        who = f"{'AB'[i]}: "
        with user_errors(f"{who}{key.label}"):
            engine = yield from _status_only(preparing(key, results_dir, who))
            yield (gr.skip(),) * 5 + (f"{who}streaming the clip through **{key.label}**…",)
            result = replay(engine, key, audio, SAMPLE_RATE, options=AB_OPTIONS)
            shown = result.text
            if not shown:
                speech = voiced(engine, audio) if speech is None else speech
                shown = no_text_reason(engine, audio, speech)
            column = Column(key.label, facts(key, engine), readout(result.finals), _wer(reference, result.text))
            done.append((result, column, shown))
        yield _render(reference, done, "" if i else f"A done. B: **{keys[1].label}** next…")
    yield _render(reference, done, "Done.")


def _render(reference: str, done: list[tuple[Transcriber, Column, str]], status: str) -> Outputs:
    (a, col_a, shown_a), b = done[0], done[1] if len(done) > 1 else None
    columns = [col_a, b[1]] if b else [col_a]
    text = table(columns) + ("" if normalize(reference) else "\n\n" + NO_REFERENCE)
    return (shown_a, _diff_against(reference, a, None), b[2] if b else "…",
            _diff_against(reference, b[0], a) if b else [], text, status)


def _side(name: str, default_model: str, method: str, bits: int,
          results_dir: Path) -> tuple[list[gr.components.Component], gr.Markdown]:
    """One side's pickers (model, method, bits) and the note under them."""
    with gr.Column():
        gr.Markdown(f"### {name}")
        with gr.Row():
            model = gr.Dropdown(model_choices(default_model), value=default_model, label="Model")
            method_box = gr.Dropdown(method_choices(), value=method, label="Method (fp = unquantized, FP16)",
                                     elem_id=f"ab-{name[0].lower()}-method")
        bits_box = gr.Radio(list(BIT_CHOICES), value=bits, elem_id=f"bits-{name[0].lower()}",
                            **bits_picker_props(method))
        # A callable value is evaluated on every page load, so the note sees engines warmed up meanwhile.
        note = gr.Markdown(partial(recipe_note, default_model, method, bits, results_dir),
                           elem_id=f"ab-note-{name[0].lower()}")
        method_box.change(lambda m: gr.update(**bits_picker_props(m)), method_box, bits_box)
        pickers = [model, method_box, bits_box]
        for picker in pickers:
            picker.change(lambda *v: recipe_note(*v, results_dir), pickers, note, show_progress="hidden")
    return pickers, note


def build(default_model: str, results_dir: Path) -> None:
    gr.Markdown("The same audio is streamed (in 0.5 s chunks, like a microphone) through two recipes. "
                "What do you lose and gain at fewer bits? Each side says which engine ran it: the **bundle** "
                "(ONNX Runtime with packed weights, what a board runs) or **torch** (fake-quant research model).")
    clips = sample_clips()
    first = next(iter(clips.values()), None)
    if clips:
        gr.set_static_paths([str(Path(c.audio).parent) for c in clips.values()])
    with gr.Row():
        with gr.Column():
            sample = gr.Dropdown([*clips, OWN_AUDIO], value=first.id if first else OWN_AUDIO,
                                 label="Sample clip (pick one again to reload it)", elem_id="ab-sample")
            audio = gr.Audio(str(first.audio) if first else None, sources=["upload", "microphone"],
                             type="filepath", label="Audio (replace it with your own)", elem_id="ab-audio")
        with gr.Column():
            reference = gr.Textbox(first.text if first else "", lines=5, label="Reference text (for WER)",
                                   elem_id="ab-reference")
            notice = gr.Markdown(SAMPLE_NOTE.format(name=first.id) if first else NEW_AUDIO_NOTE,
                                 elem_id="ab-notice")
    with gr.Row():
        side_a, note_a = _side("A", default_model, FP, 8, results_dir)
        side_b, note_b = _side("B", default_model, "rtn", 4, results_dir)
    run = gr.Button("Compare A and B", variant="primary", elem_id="ab-run")
    status = gr.Markdown(elem_id="ab-status")
    with gr.Row():
        with gr.Column():
            text_a = gr.Textbox(label="A transcript", lines=3, elem_id="ab-text-a")
            diff_a = gr.HighlightedText(label="A vs reference", color_map=COLOR_MAP, show_legend=True,
                                        elem_id="ab-diff-a")
        with gr.Column():
            text_b = gr.Textbox(label="B transcript", lines=3, elem_id="ab-text-b")
            diff_b = gr.HighlightedText(label="B vs reference", color_map=COLOR_MAP, show_legend=True,
                                        elem_id="ab-diff-b")
    readouts = gr.Markdown(elem_id="ab-table")

    sample.select(pick_sample, sample, [audio, reference, notice])
    for event in (audio.upload, audio.stop_recording):
        event(new_audio, audio, [audio, sample, reference, notice])
    run.click(partial(compare, results_dir=results_dir), [audio, reference, *side_a, *side_b],
              [text_a, diff_a, text_b, diff_b, readouts, status], show_progress="hidden").then(
        lambda *v: (recipe_note(*v[:3], results_dir), recipe_note(*v[3:], results_dir)), [*side_a, *side_b],
        [note_a, note_b], show_progress="hidden")
