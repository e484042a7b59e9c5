"""WER harness: hand-computed cases, normalizer effects, and one real set."""

import pytest

from edgeasr.metrics.wer import corpus_wer, normalize


def test_insertion_deletion_substitution_counted_by_hand():
    # ref 5 words; hyp: "the" deleted, "sat"→"sit" substituted, "down" inserted
    r = corpus_wer(["the cat sat on mat"], ["cat sit on mat down"])
    assert (r.substitutions, r.deletions, r.insertions, r.reference_words) == (1, 1, 1, 5)
    assert r.wer == pytest.approx(3 / 5)


def test_corpus_level_not_mean_of_utterances():
    # 1 error in 1 word and 0 errors in 9 words: corpus WER 10 %, the mean of utterance WERs would be 50 %
    r = corpus_wer(["yes", "the quick brown fox jumps over a lazy dog"],
                   ["no", "the quick brown fox jumps over a lazy dog"])
    assert r.wer == pytest.approx(1 / 10)


def test_empty_hypothesis_is_all_deletions_and_empty_reference_skipped():
    r = corpus_wer(["hello there", "", "good morning"], ["", "noise", "good morning"])
    assert r.deletions == 2 and r.reference_words == 4 and r.skipped_empty_references == 1
    assert r.wer == pytest.approx(0.5)


@pytest.mark.parametrize("ref,hyp", [
    ("It's twenty five dollars.", "it is $25"),
    ("Mr. Smith doesn't know", "mister smith does not know"),
    ("The colour grey", "the color gray"),
    ("HELLO, World!", "hello world"),
])
def test_normalizer_makes_equivalent_forms_equal(ref, hyp):
    assert normalize(ref) == normalize(hyp)
    assert corpus_wer([ref], [hyp]).wer == 0.0


def test_mismatched_lengths_rejected():
    with pytest.raises(ValueError):
        corpus_wer(["a"], ["a", "b"])


def test_real_set_scores_a_real_model():
    from edgeasr.data import build_dataset
    from edgeasr.engine import Engine
    from edgeasr.evaluate import evaluate

    build_dataset("moonshine-samples")
    report = evaluate(Engine.load("moonshine-tiny"), "moonshine-samples", progress=False)
    assert report.wer.utterances == 2 and report.wer.reference_words > 100
    assert report.wer.wer < 0.10, report.rows
    assert report.rtfx > 0
