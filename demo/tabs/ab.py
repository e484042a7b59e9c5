"""A/B tab: the same audio streamed through two recipes; transcripts, WER, word diff and costs side by side."""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr
import numpy as np

from edgeasr.metrics.wer import normalize, utterance_wer
from edgeasr.stream import SessionOptions

from ..diff import COLOR_MAP, word_diff
from ..engines import BIT_CHOICES, FP, EngineKey, bits_picker_props, get_engine, method_choices, model_choices
from ..feedback import user_errors
from ..readouts import comparison_table, readout
from ..samples import sample_clips
from ..streaming import Transcriber, replay

OWN_AUDIO = "(your own recording or upload)"
AB_OPTIONS = SessionOptions(partials=False)
"""Finals only: the comparison is about the final text and its cost, and partials would double the wait."""

Outputs = tuple[str, list, str, list, str]


def pick_sample(sample_id: str) -> tuple[object, object]:
    """Selecting a sample loads its audio into the player and its text into the reference box."""
    clip = sample_clips().get(sample_id)
    if clip is None:
        return gr.update(), gr.update()
    return str(clip.audio), clip.text


def _wer(reference: str, text: str) -> float | None:
    return utterance_wer(reference, text).wer if normalize(reference) else None


def _diff_against(reference: str, side: Transcriber, other: Transcriber | None) -> list:
    """Against the reference when there is one, else B against A (so differences still stand out)."""
    if normalize(reference):
        return word_diff(reference, side.text)
    if other is not None:
        return word_diff(other.text, side.text)
    return [(normalize(side.text), None)]


def compare(audio: tuple[int, np.ndarray] | None, reference: str, a_model: str, a_method: str, a_bits: int,
            b_model: str, b_method: str, b_bits: int,
            progress: gr.Progress = gr.Progress(track_tqdm=True)) -> Iterator[Outputs]:
    """Stream the audio through A, then B (one after the other, so their timings do not interfere)."""
    if audio is None:
        raise gr.Error("No audio: pick a sample clip, upload a file or record with the microphone first.")
    rate, samples = audio
    keys = EngineKey.of(a_model, a_method, a_bits), EngineKey.of(b_model, b_method, b_bits)
    results: list[Transcriber] = []
    for i, key in enumerate(keys):
        with user_errors(f"{'AB'[i]}: {key.label}"):
            engine = get_engine(key, progress)
            progress(0.9, desc=f"{'AB'[i]}: streaming through {key.label}")
            results.append(replay(engine, key, samples, int(rate), options=AB_OPTIONS))
        yield _render(reference, keys, results)


def _render(reference: str, keys: tuple[EngineKey, EngineKey], results: list[Transcriber]) -> Outputs:
    a = results[0]
    b = results[1] if len(results) > 1 else None
    empty = "(no speech detected)"
    wer_a = _wer(reference, a.text)
    wer_b = _wer(reference, b.text) if b else None
    table = comparison_table(keys[0].label, readout(a.finals), keys[1].label, readout(b.finals) if b else None,
                             wer_a, wer_b)
    if not normalize(reference):
        table += "\n\n*No reference text: type one (or pick a sample) to get WER; B is diffed against A.*"
    return (a.text or empty, _diff_against(reference, a, None),
            (b.text or empty) if b else "…", _diff_against(reference, b, a) if b else [], table)


def _side(name: str, default_model: str, method: str, bits: int) -> list[gr.components.Component]:
    with gr.Column():
        gr.Markdown(f"### {name}")
        with gr.Row():
            model = gr.Dropdown(model_choices(default_model), value=default_model, label="Model")
            method_box = gr.Dropdown(method_choices(), value=method, label="Method")
        bits_box = gr.Radio(list(BIT_CHOICES), value=bits, elem_id=f"bits-{name[0].lower()}",
                            **bits_picker_props(method))
        method_box.change(lambda m: gr.update(**bits_picker_props(m)), method_box, bits_box)
    return [model, method_box, bits_box]


def build(default_model: str) -> None:
    gr.Markdown("The same audio is streamed (in 0.5 s chunks, like a microphone) through two recipes. "
                "What do you lose and gain at fewer bits?")
    clips = sample_clips()
    first = next(iter(clips.values()), None)
    with gr.Row():
        with gr.Column():
            sample = gr.Dropdown([*clips, OWN_AUDIO], value=first.id if first else OWN_AUDIO, label="Sample clip")
            audio = gr.Audio(str(first.audio) if first else None, sources=["upload", "microphone"],
                             type="numpy", label="Audio (replace it with your own)")
        reference = gr.Textbox(first.text if first else "", lines=5, label="Reference text (for WER)",
                               elem_id="ab-reference")
    with gr.Row():
        side_a = _side("A", default_model, FP, 8)
        side_b = _side("B", default_model, "rtn", 4)
    run = gr.Button("Compare A and B", variant="primary", elem_id="ab-run")
    with gr.Row():
        with gr.Column():
            text_a = gr.Textbox(label="A transcript", lines=3, elem_id="ab-text-a")
            diff_a = gr.HighlightedText(label="A vs reference", color_map=COLOR_MAP, show_legend=True,
                                        elem_id="ab-diff-a")
        with gr.Column():
            text_b = gr.Textbox(label="B transcript", lines=3, elem_id="ab-text-b")
            diff_b = gr.HighlightedText(label="B vs reference", color_map=COLOR_MAP, show_legend=True,
                                        elem_id="ab-diff-b")
    table = gr.Markdown(elem_id="ab-table")

    sample.change(pick_sample, sample, [audio, reference])
    run.click(compare, [audio, reference, *side_a, *side_b], [text_a, diff_a, text_b, diff_b, table])
