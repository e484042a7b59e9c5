"""Where the words go: errors by clip length and the words lost to an early end of text.

A quantized decoder that emits end-of-text too soon shows up as a run of deletions at the end of the
reference (the hypothesis stops, the speech goes on). `trailing_deletions` counts that run per clip
from the word alignment of the normalised texts, but counts only reference words that the hypothesis has no
text for: a hypothesis that runs to the end of the speech with words split or joined differently ("the small
pop nordaholin vesak" for "the small pup gnawed a hole in the sock") leaves reference words over at the end of
the word alignment, yet its words after the last match are as long, in characters, as all but the last two
reference words after it, while one that stopped ("the small part") covers one word of seven (detector
revision 2, `EARLY_END_DETECTOR`; revision 1 counted the word alignment alone). A decoder that jumps over a sentence after a pause
loses a run of words inside the clip: `skipped_words` counts every run of at least
`EARLY_END_MIN_WORDS` deleted words, trailing or not. A clip whose last segment the engine's guard
dropped (a repetition loop such as "♪ ♪ ♪…" from the first token) also ends in deletions, but the decoder
never stopped: those words count as `loop_words`, not as an early end.
`clip_errors` keeps each clip's word errors, reference words and early-end words, so two rows measured
on the same clips can be compared clip by clip (`edgeasr.metrics.paired`; an early end the FP model
makes on the same clip is the model's, not the quantization's).
"""

from __future__ import annotations

import jiwer

LENGTH_BUCKETS = ((0.0, 5.0), (5.0, 10.0), (10.0, 17.0), (17.0, float("inf")))
"""Clip-length ranges (seconds) of the per-length columns."""
EARLY_END_MIN_WORDS = 3
"""A clip counts as ended early when at least this many reference words trail the last hypothesis word."""
EARLY_END_DETECTOR = 2
"""Revision of `trailing_deletions`, recorded in sweep rows: early-end counts of another revision do not compare."""


def bucket_label(low: float, high: float) -> str:
    return f"{low:g}+s" if high == float("inf") else f"{low:g}-{high:g}s"


def _last_aligned(chunks) -> int:
    """Reference index after the last word a word alignment matched or substituted."""
    return max((c.ref_end_idx for c in chunks if c.type in ("equal", "substitute")), default=0)


def words_after_last_alignment(reference_norm: str, hypothesis_norm: str) -> int:
    """Reference words after the last word the hypothesis matched or substituted (all of them if it is empty):
    detector revision 1's count."""
    ref = reference_norm.split()
    if not hypothesis_norm.split():
        return len(ref)
    return len(ref) - _last_aligned(jiwer.process_words(reference_norm, hypothesis_norm).alignments[0])


def trailing_deletions(reference_norm: str, hypothesis_norm: str) -> int:
    """`words_after_last_alignment`, but no more than the words of the reference after its last matched word that
    the hypothesis's own words after that point do not cover, by characters."""
    ref, hyp = reference_norm.split(), hypothesis_norm.split()
    if not ref or not hyp:
        return len(ref)
    chunks = jiwer.process_words(reference_norm, hypothesis_norm).alignments[0]
    equal = [c for c in chunks if c.type == "equal"]
    ref_from, hyp_from = (equal[-1].ref_end_idx, equal[-1].hyp_end_idx) if equal else (0, 0)
    covered = len(" ".join(hyp[hyp_from:]))
    starts, offset = [], 0
    for word in ref[ref_from:]:
        starts.append(offset)
        offset += len(word) + 1
    return min(len(ref) - _last_aligned(chunks), sum(start >= covered for start in starts))


def skipped_words(reference_norm: str, hypothesis_norm: str) -> int:
    """Reference words in runs of at least `EARLY_END_MIN_WORDS` consecutive deletions (the whole
    reference when the hypothesis is empty)."""
    ref = reference_norm.split()
    if not hypothesis_norm.split():
        return len(ref) if len(ref) >= EARLY_END_MIN_WORDS else 0
    chunks = jiwer.process_words(reference_norm, hypothesis_norm).alignments[0]
    runs = [c.ref_end_idx - c.ref_start_idx for c in chunks if c.type == "delete"]
    return sum(n for n in runs if n >= EARLY_END_MIN_WORDS)


def breakdown(rows: list[dict]) -> dict:
    """Per-length reference words / deletions / errors and early-end counts over evaluation rows
    (`id`, `reference_norm`, `hypothesis_norm`, `audio_seconds` as `evaluate` writes them)."""
    buckets = {bucket_label(*b): {"utterances": 0, "words": 0, "deletions": 0, "errors": 0} for b in LENGTH_BUCKETS}
    early_words = early_clips = skipped = loop_words = loop_clips = 0
    clip_errors: dict[str, list[int]] = {}
    for row in rows:
        ref, hyp = row["reference_norm"], row["hypothesis_norm"]
        if not ref.split():
            continue
        out = jiwer.process_words(ref, hyp) if hyp.split() else None
        deletions = out.deletions if out else len(ref.split())
        errors = out.substitutions + out.deletions + out.insertions if out else len(ref.split())
        low, high = next(b for b in LENGTH_BUCKETS if b[0] <= row["audio_seconds"] < b[1])
        cell = buckets[bucket_label(low, high)]
        cell["utterances"] += 1
        cell["words"] += len(ref.split())
        cell["deletions"] += deletions
        cell["errors"] += errors
        skipped += skipped_words(ref, hyp)
        trail = trailing_deletions(ref, hyp)
        early = 0
        if trail >= EARLY_END_MIN_WORDS and row.get("last_segment_dropped"):
            loop_words += trail
            loop_clips += 1
        elif trail >= EARLY_END_MIN_WORDS:
            early = trail
            early_words += trail
            early_clips += 1
        clip_errors[row["id"]] = [errors, len(ref.split()), early]
    return {"by_length": {k: v for k, v in buckets.items() if v["utterances"]},
            "early_end_words": early_words, "early_end_clips": early_clips, "skipped_words": skipped,
            "loop_words": loop_words, "loop_clips": loop_clips, "clip_errors": clip_errors}
