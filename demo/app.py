"""The edgeasr demo: `edgeasr-demo [--host 127.0.0.1] [--port 7860] [--model moonshine-tiny]`."""

from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path

import gradio as gr

from edgeasr.paths import package_data

from .engines import FP, EngineKey
from .facts import warm_up
from .tabs import ab, live, study, voice

DEFAULT_MODEL = "moonshine-tiny"
RESULTS_DIR = package_data("edgeasr.results")
"""The study's results, shipped with the package (the repository's `bench/results/`, where the sweep writes)."""

INTRO = """# edgeasr: what do you lose, and what do you gain, at 4 bits?
Quantized Whisper and Moonshine on a CPU, with the cost of every utterance: measured latency, real-time factor and
resident memory of the engine that ran (the packed **bundle** a board runs, or the **torch** research model), next to
stored weight memory, effective bits per weight, memory I/O and bit operations (BOPs = Σ MACs × weight bits ×
activation bits). **Baseline: FP = FP16** (16 bits per unquantized weight). **A/B** compares two recipes on the same
audio, **Live** transcribes your microphone or a clip, **Tune for my voice** calibrates a bundle on your own
speech and compares it with the generic one, **Study** shows the sweep."""


def build_app(default_model: str = DEFAULT_MODEL, results_dir: Path = RESULTS_DIR) -> gr.Blocks:
    """The whole UI; every browser session gets its own state, engines are shared by the process."""
    with gr.Blocks(title="edgeasr demo") as app:
        gr.Markdown(INTRO)
        with gr.Tab("A/B", id="ab"):
            ab.build(default_model, results_dir)
        with gr.Tab("Live", id="live"):
            live.build(default_model, results_dir)
        with gr.Tab("Tune for my voice", id="voice"):
            voice.build(default_model)
        with gr.Tab("Study", id="study"):
            study.build(results_dir)
    return app


def default_engines(model: str) -> list[EngineKey]:
    """What the default A/B comparison needs: FP and RTN W4 of the default model."""
    return [EngineKey.of(model, FP, 16), EngineKey.of(model, "rtn", 4)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="edgeasr-demo", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 to serve the network)")
    parser.add_argument("--port", type=int, default=7860, help="port of the web UI")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="zoo model the pickers start on")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Load the default engines while the page opens, so the first comparison does not wait for them.
    threading.Thread(target=warm_up, args=(default_engines(args.model),), daemon=True).start()
    build_app(args.model).queue(default_concurrency_limit=2).launch(
        server_name=args.host, server_port=args.port, show_error=True)


if __name__ == "__main__":
    main()
