"""Word-level diff of a hypothesis against a reference, for `gr.HighlightedText`.

Both texts go through the WER normalizer first, so the highlighted words are the ones WER scores.
The alignment here is for display; the WER number itself comes from `edgeasr.metrics.wer`.
"""

from __future__ import annotations

import difflib

from edgeasr.metrics.wer import normalize

SUBSTITUTED, INSERTED, DELETED = "substituted", "inserted", "deleted"
COLOR_MAP = {SUBSTITUTED: "orange", INSERTED: "red", DELETED: "gray"}

Span = tuple[str, str | None]


def word_diff(reference: str, hypothesis: str) -> list[Span]:
    """Hypothesis words labelled by how they differ from the reference; deleted reference words
    appear in brackets where they are missing."""
    ref, hyp = normalize(reference).split(), normalize(hypothesis).split()
    spans: list[Span] = []
    matcher = difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            spans += [(w + " ", None) for w in hyp[b0:b1]]
        if op in ("replace", "insert"):
            label = SUBSTITUTED if op == "replace" else INSERTED
            spans += [(w + " ", label) for w in hyp[b0:b1]]
        if op == "delete" or (op == "replace" and a1 - a0 > b1 - b0):
            # Reference words with no counterpart: shown so a deletion is visible, not just absent.
            missing = ref[a0:a1] if op == "delete" else ref[a0 + (b1 - b0):a1]
            spans += [(f"[{w}] ", DELETED) for w in missing]
    return spans
