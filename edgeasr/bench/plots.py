"""The study's plots from sweep rows: WER vs effective bits per weight per method, WER vs memory I/O, vs BOPs and vs the
total bytes of the bundle, with the Pareto front. Matplotlib with the Agg backend, so it runs without a display."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib import ticker  # noqa: E402

from edgeasr.bench.cell import REFERENCE_UTTERANCE  # noqa: E402

FP_BITS = 16


def _ok(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("status") == "ok"]


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (lower cost and lower WER), by increasing cost."""
    front: list[tuple[float, float]] = []
    for cost, wer in sorted(points):
        if not front or wer < front[-1][1]:
            front.append((cost, wer))
    return front


def _plain(value: float, _pos: int) -> str:
    return f"{value:g}"


def _wer_axis(ax) -> None:
    # WER spans 0 % (FP on easy prompts) to several hundred % (broken 2-bit models babbling): linear
    # below 10 %, logarithmic above.
    ax.set_yscale("symlog", linthresh=10, linscale=2)
    top = max(10.0, ax.get_ylim()[1])
    ax.set_yticks([t for t in (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if t <= top * 1.2])
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(_plain))
    ax.yaxis.set_minor_locator(ticker.NullLocator())
    ax.set_ylim(-0.5, top * 1.2)
    ax.set_ylabel("WER (%)")
    ax.grid(True, which="major", alpha=0.3)


def _effective_bits(row: dict) -> float:
    """Effective bits per weight (codes, scales, zeros, outliers), the nominal weight bits where a row lacks it."""
    return row.get("effective_bits") or row["w_bits"]


def plot_wer_vs_bits(rows: list[dict], dataset: str, path: Path) -> Path:
    """One panel per model: WER against effective bits per weight (what each method stores, not its nominal
    setting), one line per method (activations unquantized), W·A8 settings as hollow markers of the method's colour."""
    rows = _ok(rows)
    models = list(dict.fromkeys(r["model"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] != "fp"))
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 4.2), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models):
        mine = [r for r in rows if r["model"] == model]
        fp = next((r for r in mine if r["method"] == "fp"), None)
        if fp:
            ax.axhline(fp["wer"], color="black", linestyle=":", label="FP")
        for method in methods:
            weight_only = sorted((_effective_bits(r), r["wer"]) for r in mine
                                 if r["method"] == method and r["a_bits"] == FP_BITS)
            if weight_only:
                ax.plot(*zip(*weight_only), marker="o", color=colours[method], label=method)
            act = [(_effective_bits(r), r["wer"]) for r in mine if r["method"] == method and r["a_bits"] < FP_BITS]
            if act:
                ax.scatter(*zip(*act), marker="s", facecolors="none", edgecolors=[colours[method]])
        ax.set_title(model)
        ax.set_xlabel("effective bits per weight (squares: 8-bit activations)")
        ax.set_xticks([2, 3, 4, 5, 8])
        ax.set_xlim(1.6, 9.0)
        _wer_axis(ax)
    axes[0][0].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"WER vs effective bits per weight on {dataset}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_wer_vs_cost(rows: list[dict], dataset: str, key: str, label: str, scale: float, path: Path) -> Path:
    """Every cell as a point (colour = model, marker = weight bits), the Pareto front over all of them."""
    rows = _ok(rows)
    models = list(dict.fromkeys(r["model"] for r in rows))
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(models)}
    markers = {2: "v", 3: "^", 4: "o", 8: "s", FP_BITS: "*"}
    fig, ax = plt.subplots(figsize=(9, 5))
    for row in rows:
        ax.scatter(row[key] / scale, row["wer"], color=colours[row["model"]], marker=markers.get(row["w_bits"], "x"),
                   s=60 if row["w_bits"] == FP_BITS else 22, alpha=0.75, edgecolors="none")
    points = [(r[key] / scale, r["wer"]) for r in rows]
    front = pareto_front(points)
    # Extend the last step to the largest cost so a front of one point is still drawn.
    xs, ys = zip(*front, (max(p[0] for p in points), front[-1][1]))
    ax.step(xs, ys, where="post", color="black", linewidth=1, label="Pareto front")
    ax.scatter(*zip(*front), facecolors="none", edgecolors="black", s=90, linewidths=1)
    for model in models:
        ax.scatter([], [], color=colours[model], label=model)
    for bits, marker in markers.items():
        ax.scatter([], [], color="grey", marker=marker, label="FP" if bits == FP_BITS else f"W{bits}")
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(ticker.LogLocator(subs=(1.5, 2.0, 3.0, 5.0, 7.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(_plain))
    ax.xaxis.set_minor_formatter(ticker.FuncFormatter(_plain))
    ax.tick_params(axis="x", which="both", labelsize=7)
    ax.set_xlabel(label)
    _wer_axis(ax)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    seconds, tokens = REFERENCE_UTTERANCE
    per_utterance = f" ({seconds:g} s utterance, {tokens} tokens)" if key.startswith("ref_") else ""
    ax.set_title(f"WER vs {label.split(' (')[0]} on {dataset}{per_utterance}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(rows: list[dict], out_dir: Path) -> list[Path]:
    """All plots for every evaluation set in `rows`."""
    paths = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == dataset]
        if not _ok(mine):
            continue
        stem = Path(dataset).stem
        paths.append(plot_wer_vs_bits(mine, dataset, out_dir / f"wer_vs_bits-{stem}.png"))
        paths.append(plot_wer_vs_cost(mine, dataset, "ref_memory_io_bytes", "memory I/O (MB)", 1e6,
                                      out_dir / f"wer_vs_memory_io-{stem}.png"))
        paths.append(plot_wer_vs_cost(mine, dataset, "ref_bops", "BOPs (G)", 1e9, out_dir / f"wer_vs_bops-{stem}.png"))
        sized = [r for r in mine if r.get("total_bytes")]
        if _ok(sized):
            paths.append(plot_wer_vs_cost(sized, dataset, "total_bytes", "total bytes of the bundle (MB)", 1e6,
                                          out_dir / f"wer_vs_total_bytes-{stem}.png"))
    return paths
