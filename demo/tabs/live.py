"""Live tab: microphone, or any clip (a sample or an upload) replayed in real time → partial and final lines
+ readouts labelled with the recipe they belong to.

Switching recipe resets the readouts to the new recipe (its model-only numbers at once, the measured
ones after its first line). While processing falls behind real time the tab says by how much.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import gradio as gr
import numpy as np

from edgeasr.audio import SAMPLE_RATE
from edgeasr.stream.turn import END_OF_TURN_MODES, TurnOptions
from edgeasr.stream.vad import VADOptions

from ..engines import BIT_CHOICES, FP, EngineKey, bits_picker_props, method_choices, model_choices
from ..facts import facts, is_loaded, load
from ..feedback import user_errors
from ..inputs import ClipError, load_clip
from ..preparing import preparing
from ..readouts import Column, readout, table
from ..samples import sample_clips
from ..streaming import EMPTY_TRANSCRIPT, Transcriber

SAMPLE_CHUNK_SECONDS = 0.25
"""Chunk size of a replayed clip: close to what a browser microphone delivers."""
POLL_SECONDS = 0.5
"""How often a replay refreshes the page (also while a slow decode holds it up)."""
LAG_WARNING_SECONDS = 1.0
"""Processing further behind real time than this is reported as lag."""

Outputs = tuple[Transcriber | None, str, str, str, str]
"""(state, transcript, readouts, lag line, recipe status)."""


def engine_status(key: EngineKey, engine=None) -> str:
    if engine is None:
        return f"Recipe: **{key.label}** (loads on first use)."
    kind = facts(key, engine).kind
    return f"Recipe: **{key.label}**, running on the **{kind}** engine."


def readouts_for(key: EngineKey, state: Transcriber | None) -> str:
    """The readout table of `key`, titled with it; measured rows from its last finished line, if any."""
    engine = load(key) if is_loaded(key) else None
    lines = state.recipe_finals[-1:] if state is not None and state.key == key else []
    column = Column(key.label, facts(key, engine) if engine else None, readout(lines))
    title = f"**Readouts of {key.label}** ({'last finished line' if lines else 'no line finished yet'})"
    return f"{title}\n\n{table([column])}"


def lag_line(state: Transcriber | None) -> str:
    """How far processing is behind real time now (while streaming) or was at worst (the last stream), and
    how much microphone audio the browser never delivered."""
    if state is None or state.worst_lag is None:
        return ""
    line = _processing_lag(state)
    if state.skipped_seconds >= LAG_WARNING_SECONDS:
        line += (f"\n\n⚠️ The browser has not delivered **{state.skipped_seconds:.1f} s** of the recording: it skips "
                 "microphone chunks while the server is busy, so words are missing from the transcript.")
    return line


def _processing_lag(state: Transcriber) -> str:
    if state.captured_from is None:
        worst = state.worst_lag
        if worst < LAG_WARNING_SECONDS:
            return f"Last stream: processing kept up with real time (at most {worst:.1f} s behind the audio)."
        return (f"⚠️ Last stream: processing fell up to **{worst:.1f} s behind real time** (this CPU decoded "
                "slower than the audio arrived; fewer partials were shown to catch up).")
    lag = state.lag_seconds()
    if lag < LAG_WARNING_SECONDS:
        return f"Keeping up with real time (processing {lag:.1f} s behind the audio)."
    return (f"⚠️ Processing is **{lag:.1f} s behind real time**: this CPU decodes slower than the audio arrives "
            "right now (a final decode or another session is running); partials are merged until it catches up.")


def prepare(model: str, method: str, bits: int, state: Transcriber | None,
            results_dir: Path) -> Iterator[tuple[str, str]]:
    """Picked a recipe: reset the readouts to it, load it (saying how long that takes), then report its engine."""
    key = EngineKey.of(model, method, bits)
    yield engine_status(key), readouts_for(key, state)
    with user_errors(f"Loading {key.label}"):
        for line in preparing(key, results_dir):
            yield line, gr.skip()
        engine = load(key)
    yield engine_status(key, engine), readouts_for(key, state)


def ensure_transcriber(state: Transcriber | None, key: EngineKey) -> Transcriber:
    """This browser session's transcriber for `key`; a recipe switch closes the open line first."""
    if state is None:
        return Transcriber.start(key, load(key))
    if state.key != key:
        state.switch(key, load(key))
    return state


def _outputs(state: Transcriber | None, key: EngineKey) -> Outputs:
    status = engine_status(key, load(key) if is_loaded(key) else None)
    if state is None:
        return None, EMPTY_TRANSCRIPT, readouts_for(key, None), "", status
    return state, state.markdown(), readouts_for(key, state), lag_line(state), status


def live_chunk(chunk: tuple[int, np.ndarray] | None, state: Transcriber | None, model: str, method: str,
               bits: int) -> Outputs:
    """Streaming handler: one microphone chunk in, the session's transcript, readouts and lag out."""
    key = EngineKey.of(model, method, bits)
    if chunk is None:
        return _outputs(state, key)
    with user_errors("Live transcription"):
        state = ensure_transcriber(state, key)
        state.check()
        rate, samples = chunk
        state.submit(int(rate), samples)
    return _outputs(state, key)


def live_stop(state: Transcriber | None, model: str, method: str, bits: int) -> Outputs:
    """Recording stopped: complete the open line."""
    if state is not None:
        with user_errors("Finishing the line"):
            state.finish()
    return _outputs(state, EngineKey.of(model, method, bits))


def _replay(state: Transcriber, audio: np.ndarray, failure: list[BaseException]) -> None:
    """Feed `audio` at real-time pace, as a microphone would (runs in a worker thread)."""
    step = int(SAMPLE_CHUNK_SECONDS * SAMPLE_RATE)
    began = time.perf_counter()
    try:
        for i, start in enumerate(range(0, audio.size, step)):
            # The chunk "is captured" when its last sample would have been spoken.
            time.sleep(max(0.0, began + (i + 1) * SAMPLE_CHUNK_SECONDS - time.perf_counter()))
            state.feed(SAMPLE_RATE, audio[start:start + step])
        state.finish()
    except Exception as exc:  # noqa: BLE001 - handed to the handler, which reports it in the UI
        failure.append(exc)


def stream_clip(path: str | None, state: Transcriber | None, model: str, method: str, bits: int) -> Iterator[Outputs]:
    """Replay the clip in the player (a sample or an upload) in real time through the live session.

    The replay runs in a worker so the page refreshes every half second even while a decode holds the
    stream up, and the lag line shows how far behind real time it is.
    """
    try:
        audio = load_clip(path)
    except ClipError as exc:
        raise gr.Error(str(exc)) from exc
    key = EngineKey.of(model, method, bits)
    with user_errors("Streaming the clip"):
        state = ensure_transcriber(state, key)
    failure: list[BaseException] = []
    worker = threading.Thread(target=_replay, args=(state, audio, failure), name="live-replay", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(POLL_SECONDS)
        yield _outputs(state, key)
    if failure:
        with user_errors("Live transcription"):
            raise failure[0]
    yield _outputs(state, key)


def pick_clip(sample_id: str) -> object:
    clip = sample_clips().get(sample_id)
    return gr.update() if clip is None else str(clip.audio)


def set_end_of_turn(mode: str, state: Transcriber | None, model: str, method: str, bits: int) -> Outputs:
    """Toggled how a line ends: Smart Turn at a short pause, or the VAD hangover."""
    key = EngineKey.of(model, method, bits)
    with user_errors("Switching the end of turn"):
        state = ensure_transcriber(state, key)
        state.set_end_of_turn(mode)
    return _outputs(state, key)


def clear(model: str, method: str, bits: int) -> Outputs:
    """Forget this session's transcript (the engine stays cached)."""
    return _outputs(None, EngineKey.of(model, method, bits))


def build(default_model: str, results_dir: Path) -> None:
    gr.Markdown("Speak into the microphone, or stream a clip (a sample or your own upload) in real time: the open "
                "line updates as it goes, finished lines stay. Readouts are for the recipe named above them.")
    default_key = EngineKey.of(default_model, FP, 16)
    with gr.Row():
        model = gr.Dropdown(model_choices(default_model), value=default_model, label="Model")
        method = gr.Dropdown(method_choices(), value=FP, label="Method (fp = unquantized, FP16)", elem_id="live-method")
        bits = gr.Radio(list(BIT_CHOICES), value=4, elem_id="live-bits", **bits_picker_props(FP))
    end_of_turn = gr.Radio(list(END_OF_TURN_MODES), value=TurnOptions.mode, elem_id="live-end-of-turn",
                           label=f"End of turn: smart = Smart Turn at a {TurnOptions.pause_ms} ms pause, "
                                 f"vad = the {VADOptions.hangover_ms} ms hangover")
    status = gr.Markdown(engine_status(default_key), elem_id="live-status")
    state = gr.State(None)
    clips = sample_clips()
    first = next(iter(clips.values()), None)
    with gr.Row():
        with gr.Column():
            mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="Microphone",
                           elem_id="live-mic")
            sample = gr.Dropdown(list(clips), value=first.id if first else None, label="Sample clip", elem_id="live-sample")
            clip = gr.Audio(str(first.audio) if first else None, sources=["upload"], type="filepath",
                            label="Clip to stream (a sample, or upload your own)", elem_id="live-clip")
            with gr.Row():
                play = gr.Button("▶ Stream clip", variant="primary", elem_id="live-play")
                reset = gr.Button("Clear transcript")
        with gr.Column():
            transcript = gr.Markdown(EMPTY_TRANSCRIPT, elem_id="live-transcript", min_height=160)
            lag = gr.Markdown(elem_id="live-lag")
            readouts = gr.Markdown(readouts_for(default_key, None), elem_id="live-readouts")

    pickers = [model, method, bits]
    outputs = [state, transcript, readouts, lag, status]
    method.change(lambda m: gr.update(**bits_picker_props(m)), method, bits)
    for picker in pickers:
        picker.change(partial(prepare, results_dir=results_dir), [*pickers, state], [status, readouts],
                      show_progress="hidden")
    # One handler at a time, so chunks are queued in arrival order; the handler only queues them
    # (Transcriber.submit), so the browser never skips a chunk while a decode runs.
    mic.stream(live_chunk, [mic, state, *pickers], outputs, stream_every=0.5, time_limit=600,
               concurrency_limit=1, concurrency_id="live-mic", show_progress="hidden")
    mic.stop_recording(live_stop, [state, *pickers], outputs, concurrency_limit=1, concurrency_id="live-mic")
    sample.select(pick_clip, sample, clip)
    play.click(stream_clip, [clip, state, *pickers], outputs, concurrency_limit=None, show_progress="hidden")
    turn_inputs = [end_of_turn, state, *pickers]
    end_of_turn.change(set_end_of_turn, turn_inputs, outputs)
    reset.click(clear, pickers, outputs).then(set_end_of_turn, turn_inputs, outputs)
