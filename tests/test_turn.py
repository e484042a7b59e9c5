"""End of turn (Smart Turn v3.2 on webrtcvad), on real audio and real models (finals before partials: test_scheduler.py).

Nothing here is timed: where a line ended is read in audio time (`ended_by`, `end`, the decision point
`latency_ms - finalize_ms`).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from edgeasr.audio import SAMPLE_RATE, prepare_audio
from edgeasr.engine import Engine
from edgeasr.metrics.wer import utterance_wer
from edgeasr.registry import fetch_package, find_file
from edgeasr.stream import LineCompleted, SessionOptions, StreamingSession
from edgeasr.stream.turn import TurnOptions, load_turn_model, turn_features
from edgeasr.zoo.catalog import MOONSHINE_VOICE
from stream_support import feed, silence


def _finals(events: list) -> list[LineCompleted]:
    return [e for e in events if isinstance(e, LineCompleted)]


# -- no model needed -------------------------------------------------------------------------------

def test_turn_features_shape_and_front_padding() -> None:
    rng = np.random.default_rng(0)
    short = (0.1 * rng.standard_normal(3 * SAMPLE_RATE)).astype(np.float32)
    features = turn_features(short)
    assert features.shape == (1, 80, 800) and features.dtype == np.float32
    # Audio sits at the end of the 8 s window: the first 5 s are padding (flat), the last 3 s are not.
    assert features[0, :, :400].std() < 1e-3 < features[0, :, 600:].std()
    long = np.concatenate([rng.standard_normal(20 * SAMPLE_RATE).astype(np.float32), short])
    assert np.allclose(turn_features(long)[0, :, -200:], turn_features(long[-8 * SAMPLE_RATE:])[0, :, -200:])


def test_turn_options_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="end of turn"):
        TurnOptions(mode="semantic")
    with pytest.raises(ValueError, match="threshold"):
        TurnOptions(threshold=1.5)


# -- real audio, real models -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.load("moonshine-tiny")


@pytest.fixture(scope="module")
def beckett() -> np.ndarray:
    return prepare_audio(find_file(fetch_package(MOONSHINE_VOICE), "assets/beckett.wav"))


@pytest.fixture(scope="module")
def smart() -> TurnOptions:
    options = TurnOptions(mode="smart")
    assert load_turn_model(options) is not None, "Smart Turn did not load (see the warning above)"
    return options


def _prompt(prompt_id: str):
    """An Asterisk prompt (one human speaker, one sentence) and its audio; skips when the set is not built."""
    from edgeasr.data import is_built, load_manifest

    if not is_built("asterisk-en"):
        pytest.skip("asterisk-en is not built (`edgeasr data build asterisk-en`)")
    (prompt,) = [u for u in load_manifest("asterisk-en") if u.id == prompt_id]
    return prompt, prepare_audio(prompt.audio)


@pytest.mark.slow
def test_complete_sentence_ends_before_the_hangover(engine: Engine, smart: TurnOptions) -> None:
    """"The conference is now being recorded." then 300 ms of silence: the hangover (600 ms) is never reached,
    yet the line completes while streaming, decided by Smart Turn well before the hangover would have. (Not
    Beckett's "... Fail better.": its last words score 0.88 there, just under the default threshold.)"""
    prompt, clip = _prompt("conf-now-recording")
    options = SessionOptions(turn=smart)
    during, at_finish = feed(StreamingSession(engine, options), np.concatenate([silence(0.5), clip, silence(0.3)]))
    lines = _finals(during)
    assert len(lines) == 1 and not _finals(at_finish), (during, at_finish)
    (line,) = lines
    assert line.ended_by == "smart" and line.turn_probability >= smart.threshold, line
    decided_after_ms = line.latency_ms - line.finalize_ms  # audio time: last voiced frame → decision
    assert smart.pause_ms <= decided_after_ms < options.vad.hangover_ms, line
    assert utterance_wer(prompt.text, line.text).wer <= 0.2, line


@pytest.mark.slow
def test_hangover_decodes_ahead_only_at_a_pause_that_may_end_the_line(engine: Engine) -> None:
    """With the hangover alone, the final is decoded ahead at `final_pad_ms` of pause until a decode rate is
    known, then only once the pause is long enough to end the line: the 400 ms mid-sentence pause costs a
    speculative decode in a fresh session and none once the rate is known. The rate is pinned to a fast decode
    so the outcome does not depend on this machine's speed."""
    from edgeasr.bench.turn import _gap_split

    prompt, clip = _prompt("conf-invalidpin")
    split = _gap_split(clip)
    audio = np.concatenate([silence(0.3), clip[:split], silence(0.4), clip[split:], silence(1.0)])
    counts = []
    for rate in (None, 0.01):
        session = StreamingSession(engine, SessionOptions(partials=False))
        session.decode_rate = rate
        during, at_finish = feed(session, audio)
        lines = _finals(during + at_finish)
        assert len(lines) == 1 and lines[0].ended_by == "hangover", lines
        assert utterance_wer(prompt.text, lines[0].text).wer <= 0.2, lines
        counts.append(session.speculative_decodes)
    assert counts == [2, 1], counts


@pytest.mark.slow
def test_mid_sentence_pause_stays_one_line(engine: Engine, smart: TurnOptions) -> None:
    """An Asterisk prompt with 400 ms of silence inserted between two words: Smart Turn hears an unfinished
    sentence at the pause, so the line stays open and the sentence ends as one line."""
    from edgeasr.bench.turn import _gap_split

    prompt, clip = _prompt("conf-invalidpin")
    split = _gap_split(clip)
    audio = np.concatenate([silence(0.3), clip[:split], silence(0.4), clip[split:], silence(1.0)])
    during, at_finish = feed(StreamingSession(engine, SessionOptions(turn=smart)), audio)
    lines = _finals(during + at_finish)
    assert len(lines) == 1, lines
    assert lines[0].turn_probability is not None  # the mid-sentence pause was scored, and judged unfinished
    assert utterance_wer(prompt.text, lines[0].text).wer <= 0.2, lines


@pytest.mark.slow
def test_missing_model_falls_back_to_the_hangover(engine: Engine, beckett: np.ndarray, tmp_path, caplog) -> None:
    missing = TurnOptions(mode="smart", model_path=str(tmp_path / "no-such-smart-turn.onnx"))
    with caplog.at_level(logging.WARNING, logger="edgeasr.stream.turn"):
        options = SessionOptions(turn=missing, partials=False)
        during, at_finish = feed(StreamingSession(engine, options), np.concatenate([beckett, silence(1.0)]))
        StreamingSession(engine, options)  # a second session: no second warning
    warnings = [r for r in caplog.records if "Smart Turn unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "hangover" in warnings[0].getMessage()
    lines = _finals(during + at_finish)
    assert lines and all(e.ended_by == "hangover" and e.turn_probability is None for e in lines), lines
    assert all(e.latency_ms - e.finalize_ms >= options.vad.hangover_ms - 1 for e in lines)  # float rounding


def test_text_gate_reads_sentence_punctuation() -> None:
    from edgeasr.stream.turn import closes_sentence

    assert closes_sentence("Please enter a new extension followed by pound.")
    assert closes_sentence('Is that "done?"  ')
    assert not closes_sentence("Please enter a new extension,")
    assert not closes_sentence("the leader has left")
    assert not closes_sentence("")


def test_turn_score_rules_count_an_early_end_only_with_the_text_gate():
    from edgeasr.bench.turn_scores import Cut, tally

    cuts = [Cut("end", [0.96] * 5, True, "Done."), Cut("end", [0.96] * 5, False, "and then"),
            Cut("mid", [0.5, 0.5, 0.97, 0.97, 0.97], True, "A sentence."), Cut("end", [0.5] * 5, True, "Late.")]
    rows = {r["rule"]: r for r in tally(cuts)}
    assert (rows["score at 30 ms ≥ 0.95"]["early_ends"], rows["score at 30 ms ≥ 0.95"]["mid_cuts"]) == (1, 0)
    assert rows["score at 150 ms ≥ 0.95"]["mid_cuts"] == 1
    assert rows["min of 30 and 150 ms ≥ 0.95"]["mid_cuts"] == 0
    assert rows["score at 30 ms ≥ 0.95"]["ends"] == 3 and rows["score at 30 ms ≥ 0.95"]["mids"] == 1
