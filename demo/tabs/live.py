"""Live tab: microphone (or a sample clip replayed in real time) → partial and final lines + readouts."""

from __future__ import annotations

import time

import gradio as gr
import numpy as np

from edgeasr.audio import SAMPLE_RATE, prepare_audio

from ..engines import BIT_CHOICES, FP, EngineKey, bits_picker_props, get_engine, method_choices, model_choices
from ..feedback import user_errors
from ..readouts import readout, single_table
from ..samples import sample_clips
from ..streaming import EMPTY_TRANSCRIPT, Transcriber

SAMPLE_CHUNK_SECONDS = 0.25
"""Chunk size of a replayed sample: close to what a browser microphone delivers."""


def engine_status(key: EngineKey) -> str:
    return f"Engine: **{key.label}** loaded."


def prepare(model: str, method: str, bits: int, progress: gr.Progress = gr.Progress(track_tqdm=True)) -> str:
    """Load (and quantize on first use) the picked recipe before any audio arrives."""
    key = EngineKey.of(model, method, bits)
    with user_errors(f"Loading {key.label}"):
        get_engine(key, progress)
    return engine_status(key)


def ensure_transcriber(state: Transcriber | None, key: EngineKey) -> Transcriber:
    """This browser session's transcriber for `key`; a recipe switch closes the open line first."""
    if state is None:
        return Transcriber.start(key, get_engine(key))
    if state.key != key:
        state.switch(key, get_engine(key))
    return state


def _outputs(state: Transcriber | None) -> tuple[Transcriber | None, str, str]:
    if state is None:
        return None, EMPTY_TRANSCRIPT, single_table(None)
    return state, state.markdown(), single_table(readout(state.finals[-1:]))


def live_chunk(chunk: tuple[int, np.ndarray] | None, state: Transcriber | None, model: str, method: str,
               bits: int) -> tuple[Transcriber | None, str, str]:
    """Streaming handler: one microphone chunk in, the session's transcript and last readout out."""
    if chunk is None:
        return _outputs(state)
    with user_errors("Live transcription"):
        state = ensure_transcriber(state, EngineKey.of(model, method, bits))
        rate, samples = chunk
        state.feed(int(rate), samples)
    return _outputs(state)


def live_stop(state: Transcriber | None) -> tuple[Transcriber | None, str, str]:
    """Recording stopped: complete the open line."""
    if state is not None:
        with user_errors("Finishing the line"):
            state.finish()
    return _outputs(state)


def stream_sample(sample_id: str | None, state: Transcriber | None, model: str, method: str, bits: int):
    """Replay a sample clip at real-time speed through the same handler as the microphone."""
    clips = sample_clips()
    if not sample_id or sample_id not in clips:
        raise gr.Error("No sample clip is available; use the microphone instead.")
    with user_errors("Streaming the sample"):
        audio = prepare_audio(clips[sample_id].audio)
        state = ensure_transcriber(state, EngineKey.of(model, method, bits))
    step = int(SAMPLE_CHUNK_SECONDS * SAMPLE_RATE)
    began = time.perf_counter()
    for i, start in enumerate(range(0, audio.size, step)):
        with user_errors("Live transcription"):
            state.feed(SAMPLE_RATE, audio[start:start + step])
        # Pace to real time so partials appear as they would from a microphone.
        time.sleep(max(0.0, began + (i + 1) * SAMPLE_CHUNK_SECONDS - time.perf_counter()))
        yield _outputs(state)
    yield live_stop(state)


def clear(state: Transcriber | None) -> tuple[None, str, str]:
    """Forget this session's transcript (the engine stays cached)."""
    return _outputs(None)


def build(default_model: str) -> None:
    gr.Markdown("Speak into the microphone (or stream a sample clip): the open line updates as you talk, "
                "finished lines stay. Readouts are for the last finished line.")
    with gr.Row():
        model = gr.Dropdown(model_choices(default_model), value=default_model, label="Model")
        method = gr.Dropdown(method_choices(), value=FP, label="Method (fp = unquantized)")
        bits = gr.Radio(list(BIT_CHOICES), value=4, **bits_picker_props(FP))
    status = gr.Markdown(f"Engine: **{EngineKey.of(default_model, FP, 16).label}** (loads on first use).",
                         elem_id="live-status")
    state = gr.State(None)
    with gr.Row():
        with gr.Column():
            mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="Microphone")
            clips = list(sample_clips())
            with gr.Row():
                sample = gr.Dropdown(clips, value=clips[0] if clips else None, label="Sample clip", scale=2)
                play = gr.Button("▶ Stream sample", variant="primary", scale=1)
            reset = gr.Button("Clear transcript")
        with gr.Column():
            transcript = gr.Markdown(EMPTY_TRANSCRIPT, elem_id="live-transcript", min_height=160)
            readouts = gr.Markdown(single_table(None), elem_id="live-readouts")

    pickers = [model, method, bits]
    outputs = [state, transcript, readouts]
    method.change(lambda m: gr.update(**bits_picker_props(m)), method, bits)
    for picker in pickers:
        picker.change(prepare, pickers, status)
    mic.stream(live_chunk, [mic, state, *pickers], outputs, stream_every=0.5, time_limit=600,
               concurrency_limit=None)
    mic.stop_recording(live_stop, state, outputs)
    play.click(stream_sample, [sample, state, *pickers], outputs, concurrency_limit=None)
    reset.click(clear, state, outputs)
