"""Study tab, curated: the WER summary table and, per model, WER against weight bits and against stored
weight memory, for one evaluation set at a time. Every result row, the sweep's full reports and its own
plots are one click away in collapsed sections, so the page stays short."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from ..plots import study_figure
from ..study import StudyResults, load_results, summary

NO_RESULTS = ("**No sweep results yet** in `{root}`. Run the study (`make bench`, or `edgeasr sweep` then "
              "`edgeasr report`) and press *Reload*; the table and plots appear here.")
PREFERRED_DATASET = "asterisk-en"
"""The held-out read-speech set the study ranks methods on; shown first when present."""
ABOUT = ("WER in % (Whisper English normalizer, corpus level) per model, method and bit-width; **FP16** is the "
         "unquantized baseline (16 bits per weight). *refused*: the method does not apply to that setting. "
         "Stored weight memory counts quantized codes with their scales and zero points, and FP tensors at 16 bits.")


def _shown(root: Path) -> str:
    """The results folder as the user would type it (relative to where the demo runs, when inside it)."""
    try:
        return str(root.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(root)


def _datasets(results: StudyResults) -> list[str]:
    found = results.choices("dataset")
    return sorted(found, key=lambda d: (d != PREFERRED_DATASET, d))


def _report_names(results: StudyResults) -> list[str]:
    return [str(p.relative_to(results.root)) for p in results.reports]


def render(results: StudyResults, dataset: str | None, models: list[str] | None, methods: list[str] | None):
    """(caption, summary table, figure, all rows, sweep plots) for the chosen set, models and methods."""
    if results.empty:
        return NO_RESULTS.format(root=_shown(results.root)), pd.DataFrame(), None, pd.DataFrame(), []
    table = results.filtered(models, methods)
    if dataset and "dataset" in table:
        table = table[table["dataset"] == dataset]
    caption = (f"{len(table)} of {len(results.table)} study cells, on **{dataset}**, from "
               f"`{_shown(results.root)}`. {ABOUT}")
    figure = study_figure(table, dataset or "")
    if figure is None:
        caption += " No cell has both WER and weight bits to plot yet."
    return caption, summary(table), figure, table, [str(p) for p in results.plots]


def build(results_dir: Path) -> None:
    results = load_results(results_dir)
    datasets = _datasets(results)
    with gr.Row():
        dataset = gr.Dropdown(datasets, value=datasets[0] if datasets else None, label="Evaluation set")
        models = gr.Dropdown(results.choices("model"), multiselect=True, label="Models (none = all)")
        methods = gr.Dropdown(results.choices("method"), multiselect=True, label="Methods (none = all)")
        reload = gr.Button("Reload", scale=0)
    caption, table, figure, rows, plots = render(results, datasets[0] if datasets else None, None, None)
    notes = gr.Markdown(caption, elem_id="study-summary")
    summary_box = gr.Dataframe(table, label="WER (%) by method and bit-width", max_height=460, elem_id="study-table")
    gr.Markdown("**WER against weight bits (left) and against memory (right), per model**")
    figure_box = gr.Plot(figure, show_label=False, elem_id="study-plot")
    with gr.Accordion(f"All result rows ({len(results.table)})", open=False):
        rows_box = gr.Dataframe(rows, wrap=True, max_height=500)
    with gr.Accordion("Full reports of the sweep and the benchmarks", open=False):
        names = _report_names(results)
        report = gr.Dropdown(names, value=None, label="Report")
        report_text = gr.Markdown()
    with gr.Accordion("Plots written by the sweep", open=False):
        gallery = gr.Gallery(plots, label="Sweep plots", columns=3, height="auto")

    def show_report(name: str | None) -> str:
        return (results_dir / name).read_text(encoding="utf-8") if name else ""

    def refresh(chosen_set: str | None, chosen_models: list[str], chosen_methods: list[str]):
        return render(load_results(results_dir), chosen_set, chosen_models, chosen_methods)

    def reload_all(chosen_set: str | None, chosen_models: list[str], chosen_methods: list[str]):
        fresh = load_results(results_dir)
        return (gr.update(choices=_datasets(fresh)), gr.update(choices=fresh.choices("model")),
                gr.update(choices=fresh.choices("method")), gr.update(choices=_report_names(fresh)),
                *render(fresh, chosen_set, chosen_models, chosen_methods))

    outputs = [notes, summary_box, figure_box, rows_box, gallery]
    for control in (dataset, models, methods):
        control.change(refresh, [dataset, models, methods], outputs)
    report.change(show_report, report, report_text)
    reload.click(reload_all, [dataset, models, methods], [dataset, models, methods, report, *outputs])
