"""Readouts as Markdown tables: per engine, what it is (bundle or torch, stored bytes, effective bits, resident
memory, all independent of the audio) and what it measured on the audio (latency, real-time factor) next
to the analytic costs of that audio (memory I/O, BOPs).

The numbers come from the session's `LineCompleted` events, the engine's `CostReport` and
`EngineFacts`; this module only sums and formats them. The baseline convention is FP16: an unquantized
weight counts 16 bits, and every ratio is read against that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgeasr.metrics.bits import storage_bits
from edgeasr.stream import LineCompleted

from .facts import EngineFacts

BASELINE_NOTE = ("**Baseline: FP = FP16** (16 bits per unquantized weight). Ratios are against FP16; against "
                 "FP32 (how the research backend holds an FP model in RAM) they are half as large.")
TORCH_NOTE = ("*torch* = the research model with fake-quantized weights, held at full width: its latency and "
              "resident memory are not what a board running the bundle sees.")
NO_LINE = "— (no final line)"


@dataclass(frozen=True)
class Readout:
    """What the finals of one clip (or one utterance) measured and cost."""

    audio_seconds: float
    latency_ms: float
    """Mean end-of-speech-to-final latency (session clock)."""
    decode_seconds: float
    """Compute time of the final decodes."""
    memory_io_bytes: int | None
    bops: int | None

    @property
    def rtf(self) -> float:
        """Real-time factor: compute seconds per audio second (below 1 keeps up with live audio)."""
        return self.decode_seconds / self.audio_seconds if self.audio_seconds > 0 else 0.0


def readout(lines: Sequence[LineCompleted]) -> Readout | None:
    """Sum the finals of one utterance or clip; None when no line was completed."""
    if not lines:
        return None
    costs = [line.cost for line in lines if line.cost is not None]
    complete = len(costs) == len(lines)
    return Readout(
        audio_seconds=sum(line.end - line.start for line in lines),
        latency_ms=sum(line.latency_ms for line in lines) / len(lines),
        decode_seconds=sum(line.decode_ms for line in lines) / 1000,
        memory_io_bytes=sum(c.memory_io_bytes for c in costs) if complete else None,
        bops=sum(c.bops for c in costs) if complete else None,
    )


@dataclass(frozen=True)
class Column:
    """One engine's column of a readout table."""

    label: str
    """The recipe, as the pickers name it."""
    facts: EngineFacts | None
    """Model-only readouts; None only before the engine has loaded."""
    measured: Readout | None
    """What its finals measured; None when no line completed."""
    wer: float | None = None


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def _kind(c: Column) -> str | None:
    if c.facts is None:
        return None
    return "bundle (ONNX Runtime, packed weights)" if c.facts.kind == "bundle" else c.facts.kind


def _bits(c: Column) -> float | None:
    if c.facts is None:
        return None
    if c.facts.w_bits >= 16:
        return 16.0  # FP: every weight at the FP16 baseline's width
    return c.facts.effective_bits


def _bits_text(c: Column) -> str:
    bits = _bits(c)
    if bits is None:
        return "n/a"
    return f"{bits:.2f}" if c.facts.w_bits < 16 else "16 (FP16)"


def _resident_text(c: Column) -> str:
    if c.facts is None:
        return "n/a"
    if c.facts.resident_bytes is None:
        return f"not measured ({c.facts.resident_note})"
    return _si(c.facts.resident_bytes, "B")


Row = tuple[str, Callable[[Column], float | None], Callable[[Column], str]]


def _measured(get: Callable[[Readout], float | None], fmt: Callable[[float], str]) -> tuple:
    value = lambda c: None if c.measured is None else get(c.measured)
    text = lambda c: NO_LINE if c.measured is None else ("n/a" if value(c) is None else fmt(value(c)))
    return value, text


def _model(get: Callable[[EngineFacts], float | None], fmt: Callable[[float], str]) -> tuple:
    value = lambda c: None if c.facts is None else get(c.facts)
    text = lambda c: "n/a" if value(c) is None else fmt(value(c))
    return value, text


ROWS: tuple[Row, ...] = (
    ("Engine that ran", lambda c: None, lambda c: _kind(c) or "n/a"),
    ("Latency, measured (end of speech → final)", *_measured(lambda r: r.latency_ms, lambda v: f"{v:.0f} ms")),
    ("Real-time factor, measured (compute ÷ audio)", *_measured(lambda r: r.rtf, lambda v: f"{v:.2f}")),
    ("Resident memory, measured (RSS added at load)",
     lambda c: None if c.facts is None else c.facts.resident_bytes, _resident_text),
    ("Weight memory, stored (FP counted at 16 bits)", *_model(lambda f: f.weight_bytes, lambda v: _si(v, "B"))),
    ("Effective bits per weight (codes + scales + zeros)", _bits, _bits_text),
    ("Model size, total (every file of the bundle)", *_model(lambda f: f.total_bytes, lambda v: _si(v, "B"))),
    ("Memory I/O for this audio (analytic)", *_measured(lambda r: r.memory_io_bytes, lambda v: _si(v, "B"))),
    ("BOPs for this audio (analytic)", *_measured(lambda r: r.bops, lambda v: _si(v, "BOPs"))),
)


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not a:
        return ""
    return f"{b / a:.2f}×"


def _wer_text(wer: float | None) -> str:
    return "n/a" if wer is None else f"{100 * wer:.1f} %"


def notes(columns: Sequence[Column]) -> str:
    """The conventions the table's numbers follow, and what a reader of these particular columns must know."""
    lines = [BASELINE_NOTE]
    for c in columns:
        if c.facts is None:
            continue
        container = storage_bits(c.facts.w_bits) if c.facts.w_bits < 16 else 16
        if container != c.facts.w_bits:
            lines.append(f"W{c.facts.w_bits} codes are stored in {container}-bit containers (the kernels pack 2, 4 "
                         f"or 8 bits), so W{c.facts.w_bits}'s weight memory equals W{container}'s; its effective "
                         f"bits count the {c.facts.w_bits}-bit codes.")
        if c.facts.w_bits >= 16 and c.facts.kind == "bundle":
            lines.append("The FP bundle itself stores fp32 weights, so its total size is about twice its FP16 weight memory.")
        if c.facts.kind == "torch":
            lines.append(TORCH_NOTE + (f" ({c.facts.kind_note})" if c.facts.kind_note else ""))
    return "\n\n".join(dict.fromkeys(lines))


def table(columns: Sequence[Column]) -> str:
    """Markdown table: one column per engine (A, B, …), a B / A ratio column when there are two."""
    two = len(columns) == 2
    names = [f"{'AB'[i]}: {c.label}" if two else c.label for i, c in enumerate(columns)]
    header = ["Readout", *names] + (["B / A"] if two else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    if any(c.wer is not None for c in columns):
        delta = []
        if two:
            a, b = columns[0].wer, columns[1].wer
            delta = ["n/a" if a is None or b is None else f"{100 * (b - a):+.1f} pts"]
        lines.append("| " + " | ".join(["WER (against the reference)", *(_wer_text(c.wer) for c in columns),
                                        *delta]) + " |")
    for title, value, text in ROWS:
        cells = [title, *(text(c) for c in columns)]
        if two:
            cells.append(_ratio(value(columns[0]), value(columns[1])))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + notes(columns)
