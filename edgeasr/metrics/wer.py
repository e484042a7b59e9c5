"""Word error rate with the Open ASR Leaderboard convention.

Both reference and hypothesis go through Whisper's English text normalizer (the `whisper-normalizer`
package, a maintained copy of OpenAI's), then jiwer aligns them. WER is corpus-level: the sum of
substitutions, deletions and insertions over the sum of reference words, not a mean of per-clip WERs.
Utterances whose normalized reference is empty are left out and counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import jiwer


@lru_cache(maxsize=1)
def _normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize(text: str) -> str:
    """Whisper's English normalization: lower case, spelled-out numbers to digits, contractions, spelling."""
    return " ".join(_normalizer()(text or "").split())


@dataclass
class WERResult:
    wer: float
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    reference_words: int
    utterances: int
    skipped_empty_references: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"WER {100 * self.wer:.2f}% (S {self.substitutions}, D {self.deletions}, I {self.insertions}, "
                f"N {self.reference_words}, {self.utterances} utterances)")


def corpus_wer(references: list[str], hypotheses: list[str]) -> WERResult:
    """Corpus-level WER over aligned lists of reference and hypothesis texts."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    pairs = [(normalize(r), normalize(h)) for r, h in zip(references, hypotheses)]
    kept = [(r, h) for r, h in pairs if r]
    skipped = len(pairs) - len(kept)
    if not kept:
        raise ValueError("no reference has any words after normalization: WER is undefined")
    # jiwer rejects empty hypotheses inside a list; an empty one is all deletions, which a placeholder-free
    # alignment gives when we score it separately.
    scored = [(r, h) for r, h in kept if h]
    s = d = i = hits = 0
    if scored:
        out = jiwer.process_words([r for r, _ in scored], [h for _, h in scored])
        s, d, i, hits = out.substitutions, out.deletions, out.insertions, out.hits
    d += sum(len(r.split()) for r, h in kept if not h)
    n = sum(len(r.split()) for r, _ in kept)
    return WERResult((s + d + i) / n, s, d, i, hits, n, len(kept), skipped)


def utterance_wer(reference: str, hypothesis: str) -> WERResult:
    return corpus_wer([reference], [hypothesis])
