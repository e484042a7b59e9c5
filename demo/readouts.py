"""Cost readouts of utterances (latency, real-time factor, weight memory, memory I/O, BOPs) as text.

The numbers come from the session's `LineCompleted` events and the engine's `CostReport`; this module
only sums and formats them. Until a cost model is attached the cost columns show "n/a".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgeasr.stream import LineCompleted


@dataclass(frozen=True)
class Readout:
    """Cost of one utterance, or the sum over the utterances of one clip."""

    audio_seconds: float
    latency_ms: float
    """Mean end-of-speech-to-final latency (session clock)."""
    decode_seconds: float
    """Compute time of the final decodes."""
    weight_bytes: int | None
    memory_io_bytes: int | None
    bops: int | None

    @property
    def rtf(self) -> float:
        """Real-time factor: compute seconds per audio second (below 1 keeps up with live audio)."""
        return self.decode_seconds / self.audio_seconds if self.audio_seconds > 0 else 0.0


def readout(lines: Sequence[LineCompleted]) -> Readout | None:
    """Sum the finals of one utterance or clip; None when nothing was transcribed."""
    if not lines:
        return None
    costs = [line.cost for line in lines if line.cost is not None]
    complete = len(costs) == len(lines)
    return Readout(
        audio_seconds=sum(line.end - line.start for line in lines),
        latency_ms=sum(line.latency_ms for line in lines) / len(lines),
        decode_seconds=sum(line.decode_ms for line in lines) / 1000,
        # Weight memory is a property of the model, the same on every line.
        weight_bytes=costs[0].weight_bytes if costs else None,
        memory_io_bytes=sum(c.memory_io_bytes for c in costs) if complete else None,
        bops=sum(c.bops for c in costs) if complete else None,
    )


def _si(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


ROWS: tuple[tuple[str, str], ...] = (
    ("Latency (end of speech → final)", "latency"),
    ("Real-time factor (compute / audio)", "rtf"),
    ("Weight memory", "weights"),
    ("Memory I/O", "memory_io"),
    ("BOPs", "bops"),
)


def _values(r: Readout | None) -> dict[str, float | None]:
    if r is None:
        return dict.fromkeys(("latency", "rtf", "weights", "memory_io", "bops"))
    return {"latency": r.latency_ms, "rtf": r.rtf, "weights": r.weight_bytes,
            "memory_io": r.memory_io_bytes, "bops": r.bops}


def _format(name: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if name == "latency":
        return f"{value:.0f} ms"
    if name == "rtf":
        return f"{value:.2f}"
    if name == "bops":
        return _si(value, "BOPs")
    return _si(value, "B")


def single_table(r: Readout | None) -> str:
    """Markdown table of one engine's readout."""
    values = _values(r)
    rows = "\n".join(f"| {title} | {_format(name, values[name])} |" for title, name in ROWS)
    return f"| Readout | Value |\n|---|---|\n{rows}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not a:
        return "n/a"
    return f"{b / a:.2f}×"


def comparison_table(label_a: str, a: Readout | None, label_b: str, b: Readout | None,
                     wer_a: float | None = None, wer_b: float | None = None) -> str:
    """Markdown table of two readouts side by side with the ratio B / A (WER first when known)."""
    va, vb = _values(a), _values(b)
    lines = [f"| Readout | A: {label_a} | B: {label_b} | B / A |", "|---|---|---|---|"]
    if wer_a is not None or wer_b is not None:
        fmt = lambda w: "n/a" if w is None else f"{100 * w:.1f} %"
        delta = "n/a" if wer_a is None or wer_b is None else f"{100 * (wer_b - wer_a):+.1f} pts"
        lines.append(f"| WER | {fmt(wer_a)} | {fmt(wer_b)} | {delta} |")
    for title, name in ROWS:
        lines.append(f"| {title} | {_format(name, va[name])} | {_format(name, vb[name])} | "
                     f"{_ratio(va[name], vb[name])} |")
    return "\n".join(lines)
