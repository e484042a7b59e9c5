"""Study tab: the sweep's table and plots (WER vs weight bits, WER vs memory I/O), filtered by model and method."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from ..study import StudyResults, load_results

NO_RESULTS = ("**No sweep results yet** in `{root}`. Run the study (`make bench`, or `edgeasr sweep` then "
              "`edgeasr report`) and press *Reload*; the table and plots appear here.")


def _plots(table: pd.DataFrame) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Rows each plot can draw: a WER and an x value, failed cells left out."""
    if "wer_percent" not in table:
        return None, None
    ok = table[table["wer_percent"].notna()]
    if "status" in ok:
        ok = ok[ok["status"].fillna("ok") == "ok"]
    if "error" in ok:
        ok = ok[ok["error"].isna()]
    color = ok["model"].astype(str) + " " + ok["method"].astype(str) if {"model", "method"} <= set(ok) else None
    ok = ok.assign(recipe=color) if color is not None else ok
    by_bits = ok[ok["w_bits"].notna()] if "w_bits" in ok else None
    by_memory = ok[ok["memory_io_mb"].notna()] if "memory_io_mb" in ok else None
    return by_bits, by_memory


def _shown(root: Path) -> str:
    """The results folder as the user would type it (relative to where the demo runs, when inside it)."""
    try:
        return str(root.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(root)


def render(results: StudyResults, models: list[str] | None, methods: list[str] | None):
    if results.empty:
        message = NO_RESULTS.format(root=_shown(results.root))
        return message, None, None, None, gr.update(value=[], visible=False)
    table = results.filtered(models, methods)
    by_bits, by_memory = _plots(table)
    summary = f"{len(table)} of {len(results.table)} result rows from `{_shown(results.root)}`."
    for frame, what in ((by_bits, "weight bits"), (by_memory, "memory I/O")):
        if frame is None or frame.empty:
            summary += f" No row has both WER and {what} to plot yet."
    if results.reports:
        summary += "\n\n" + "\n\n".join(p.read_text(encoding="utf-8") for p in results.reports)
    return summary, table, by_bits, by_memory, gr.update(value=[str(p) for p in results.plots],
                                                         visible=bool(results.plots))


def build(results_dir: Path) -> None:
    results = load_results(results_dir)
    with gr.Row():
        models = gr.Dropdown(results.choices("model"), multiselect=True, label="Models (none = all)")
        methods = gr.Dropdown(results.choices("method"), multiselect=True, label="Methods (none = all)")
        reload = gr.Button("Reload", scale=0)
    summary, table, by_bits, by_memory, gallery = render(results, None, None)
    with gr.Row():
        bits_plot = gr.ScatterPlot(by_bits, x="w_bits", y="wer_percent", color="recipe" if by_bits is not None else None,
                                title="WER (%) vs weight bits", label="WER vs bits")
        memory_plot = gr.ScatterPlot(by_memory, x="memory_io_mb", y="wer_percent",
                                     color="recipe" if by_memory is not None else None,
                                     title="WER (%) vs memory I/O per utterance (MB)", label="WER vs memory I/O")
    table_box = gr.Dataframe(table, label="Results", wrap=True)
    gallery_box = gr.Gallery(gallery["value"], visible=gallery["visible"], label="Plots written by the sweep", columns=3, height="auto")
    notes = gr.Markdown(summary, elem_id="study-summary")

    def refresh(chosen_models: list[str], chosen_methods: list[str]):
        fresh = load_results(results_dir)
        return render(fresh, chosen_models, chosen_methods)

    def reload_all(chosen_models: list[str], chosen_methods: list[str]):
        fresh = load_results(results_dir)
        return (gr.update(choices=fresh.choices("model")), gr.update(choices=fresh.choices("method")),
                *render(fresh, chosen_models, chosen_methods))

    outputs = [notes, table_box, bits_plot, memory_plot, gallery_box]
    for control in (models, methods):
        control.change(refresh, [models, methods], outputs)
    reload.click(reload_all, [models, methods], [models, methods, *outputs])
