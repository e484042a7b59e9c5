"""The paired bootstrap separates a real WER difference from the noise of a small set."""

from __future__ import annotations

import numpy as np
import pytest

from edgeasr.metrics.paired import paired_bootstrap


def _clips(errors: list[int], words: int = 20) -> dict[str, list[int]]:
    return {f"c{i}": [e, words] for i, e in enumerate(errors)}


def test_identical_systems_tie_at_zero() -> None:
    a = _clips([1, 0, 3, 2, 0, 5])
    result = paired_bootstrap(a, dict(a))
    assert (result.delta, result.low, result.high, result.verdict) == (0.0, 0.0, 0.0, "tie")
    assert result.clips == 6


def test_one_word_on_a_small_set_is_a_tie_and_a_consistent_gap_is_not() -> None:
    rng = np.random.default_rng(1)
    base = rng.integers(0, 4, size=48).tolist()
    one_more = base.copy()
    one_more[7] += 1  # one word of 960
    tie = paired_bootstrap(_clips(one_more), _clips(base))
    assert tie.delta == pytest.approx(100 / 960) and tie.verdict == "tie" and tie.low <= 0 <= tie.high
    worse = paired_bootstrap(_clips([e + 1 for e in base]), _clips(base))  # one more error on every clip
    assert worse.verdict == "worse" and worse.low > 0 and worse.p_a_worse == 1.0
    assert paired_bootstrap(_clips(base), _clips([e + 1 for e in base])).verdict == "better"


def test_only_shared_clips_count_and_references_must_match() -> None:
    a, b = _clips([2, 2, 9]), _clips([1, 1])
    assert paired_bootstrap(a, b).clips == 2  # the third clip was not scored for b
    with pytest.raises(ValueError, match="different references"):
        paired_bootstrap({"x": [1, 10]}, {"x": [1, 11]})
    with pytest.raises(ValueError, match="no scored clip"):
        paired_bootstrap({"x": [1, 10]}, {"y": [1, 10]})
