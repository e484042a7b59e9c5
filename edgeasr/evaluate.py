"""Evaluate an Engine on a manifest: corpus WER, S/I/D, RTFx, and one row per utterance."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from edgeasr.metrics.wer import WERResult, corpus_wer, normalize

log = logging.getLogger(__name__)


@dataclass
class EvalReport:
    model: str
    dataset: str
    wer: WERResult
    audio_seconds: float
    compute_seconds: float
    rows: list[dict]

    @property
    def rtfx(self) -> float:
        return self.audio_seconds / self.compute_seconds if self.compute_seconds else float("inf")

    def summary(self) -> dict:
        return {"model": self.model, "dataset": self.dataset, **self.wer.to_dict(),
                "audio_seconds": round(self.audio_seconds, 2), "compute_seconds": round(self.compute_seconds, 2),
                "rtfx": round(self.rtfx, 2)}

    def __str__(self) -> str:
        return f"{self.model} on {self.dataset}: {self.wer}, RTFx {self.rtfx:.1f}"


def evaluate(engine, dataset: str | Path, limit: int | None = None, rows_path: Path | None = None,
             progress: bool = True) -> EvalReport:
    """Transcribe every labelled utterance of `dataset` and score it; write per-utterance rows if asked."""
    from edgeasr.data.manifest import load_manifest

    utterances = [u for u in load_manifest(dataset, limit=limit) if u.text]
    if not utterances:
        from edgeasr.errors import DatasetError

        raise DatasetError(f"{dataset} has no labelled utterances to evaluate")
    rows, audio_s, compute_s = [], 0.0, 0.0
    for utt in tqdm(utterances, desc=f"eval {engine.name} on {dataset}", disable=not progress):
        t = engine.transcribe(utt.audio)
        audio_s += t.audio_seconds
        compute_s += t.seconds
        row = {"id": utt.id, "reference": utt.text, "hypothesis": t.text,
               "reference_norm": normalize(utt.text), "hypothesis_norm": normalize(t.text),
               "audio_seconds": round(t.audio_seconds, 3), "seconds": round(t.seconds, 4)}
        if t.cost is not None:
            row.update({"memory_io_bytes": t.cost.memory_io_bytes, "bops": t.cost.bops})
        if t.segments and t.segments[-1].dropped:
            # The clip's last stretch decoded to something the guard threw away (a loop, a hallucination):
            # its missing words are not an early end of text.
            row["last_segment_dropped"] = t.segments[-1].dropped
        rows.append(row)
    wer = corpus_wer([r["reference"] for r in rows], [r["hypothesis"] for r in rows])
    for row in rows:
        row["wer"] = round(corpus_wer([row["reference"]], [row["hypothesis"]]).wer, 4) if row["reference_norm"] else None
    report = EvalReport(engine.name, str(dataset), wer, audio_s, compute_s, rows)
    if rows_path:
        rows_path.parent.mkdir(parents=True, exist_ok=True)
        with open(rows_path, "w") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
            handle.write(json.dumps({"summary": report.summary()}) + "\n")
    return report
