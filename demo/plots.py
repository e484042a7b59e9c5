"""The Study tab's figure: per model, WER against weight bits and against memory (the bundle's total bytes
when the rows record them, else stored weight memory).

Colour = method (one legend for the whole figure), marker = weight bits in the memory panel, hollow
squares = 8-bit activations in the bits panel; axis titles in words; both axes span every point. WER
runs from ~2 % to over 100 % (broken 2-bit models babble), so its axis is linear below 10 % and
logarithmic above, where the readable differences are. Figures are built without pyplot (no global
registry, no display backend), so a long-running demo does not accumulate them.
"""

from __future__ import annotations

import pandas as pd
from matplotlib import colormaps, ticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

FP = "fp"
FP_BITS = 16
WER_TICKS = (0, 2, 5, 10, 20, 50, 100, 200, 500)
BIT_MARKERS = {2: "v", 3: "^", 4: "o", 6: "D", 8: "s", FP_BITS: "*"}


def _wer_axis(ax, top: float) -> None:
    ax.set_yscale("symlog", linthresh=10, linscale=2)
    ax.set_yticks([t for t in WER_TICKS if t <= top * 1.3])
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _p: f"{v:g}"))
    ax.yaxis.set_minor_locator(ticker.NullLocator())
    ax.set_ylim(-0.3, top * 1.3)
    ax.set_ylabel("Word error rate (%)")
    ax.grid(True, alpha=0.3)


def _memory_axis(rows: pd.DataFrame) -> tuple[str | None, str]:
    """Total bytes (every file of the bundle) once every row records them, else stored weight memory."""
    if "total_mb" in rows and rows["total_mb"].notna().all():
        return "total_mb", "Model size, total (MB, every file of the bundle)"
    if "weight_mb" in rows:
        return "weight_mb", "Stored weight memory (MB; FP counted at 16 bits)"
    return None, ""


def _usable(table: pd.DataFrame) -> pd.DataFrame:
    """Rows with a WER, weight bits and a model; refused or failed cells left out."""
    need = {"model", "method", "w_bits", "wer_percent"}
    if not need <= set(table):
        return table.iloc[0:0]
    ok = table.dropna(subset=list(need))
    if "status" in ok:
        ok = ok[ok["status"].fillna("ok") == "ok"]
    return ok


def study_figure(table: pd.DataFrame, dataset: str) -> Figure | None:
    """One row of two panels per model in `table` (already filtered to one dataset); None if nothing to plot."""
    rows = _usable(table)
    if rows.empty:
        return None
    models = list(dict.fromkeys(rows["model"]))
    methods = [m for m in dict.fromkeys(rows["method"]) if m != FP]
    palette = colormaps["tab10"]
    colours = {m: palette(i % 10) for i, m in enumerate(methods)}
    memory, memory_label = _memory_axis(rows)
    top = float(rows["wer_percent"].max())
    fig = Figure(figsize=(11, 3.1 * len(models) + 0.9))
    axes = fig.subplots(len(models), 2, squeeze=False)
    for (bits_ax, mem_ax), model in zip(axes, models):
        mine = rows[rows["model"] == model]
        fp = mine[mine["method"] == FP]
        for method in methods:
            cells = mine[mine["method"] == method].sort_values("w_bits")
            a16 = cells[cells["a_bits"].fillna(FP_BITS) >= FP_BITS] if "a_bits" in cells else cells
            a8 = cells.drop(a16.index)
            bits_ax.plot(a16["w_bits"], a16["wer_percent"], marker="o", markersize=4, color=colours[method])
            bits_ax.scatter(a8["w_bits"], a8["wer_percent"], marker="s", facecolors="none",
                            edgecolors=[colours[method]] * len(a8))
            if memory:
                for bits, group in cells.groupby("w_bits"):
                    mem_ax.scatter(group[memory], group["wer_percent"], color=colours[method], s=26,
                                   marker=BIT_MARKERS.get(int(bits), "x"), alpha=0.85)
        if memory and not fp.empty:
            mem_ax.scatter(fp[memory], fp["wer_percent"], color="black", marker="*", s=90)
        for ax in (bits_ax, mem_ax):
            if not fp.empty:
                ax.axhline(float(fp["wer_percent"].iloc[0]), color="black", linestyle=":", linewidth=1)
            _wer_axis(ax, top)
            ax.set_title(f"{model} on {dataset}", fontsize=10)
        shown_bits = sorted(int(b) for b in mine["w_bits"].unique() if b < FP_BITS)
        bits_ax.set_xticks(shown_bits)
        bits_ax.set_xlim(min(shown_bits, default=2) - 0.6, max(shown_bits, default=8) + 0.6)
        bits_ax.set_xlabel("Weight bits per weight (grid width)")
        if memory:
            values = mine[memory].dropna()
            if not values.empty:
                span = float(values.max() - values.min()) or 1.0
                mem_ax.set_xlim(float(values.min()) - 0.06 * span, float(values.max()) + 0.06 * span)
            mem_ax.set_xlabel(memory_label)
    handles = [Line2D([], [], color=colours[m], marker="o", label=m) for m in methods]
    handles.append(Line2D([], [], color="black", linestyle=":", label="FP (FP16) WER"))
    handles.append(Line2D([], [], color="grey", marker="s", markerfacecolor="none", linestyle="none",
                          label="8-bit activations (left)"))
    handles += [Line2D([], [], color="black" if b == FP_BITS else "grey", marker=marker, linestyle="none",
                       label="FP (right)" if b == FP_BITS else f"W{b} (right)")
                for b, marker in BIT_MARKERS.items() if b in set(rows["w_bits"].astype(int))]
    fig.legend(handles=handles, loc="upper center", ncol=min(8, len(handles)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.75 / fig.get_figheight()))
    return fig
