"""Greedy decoding on a toy vocabulary with a scripted model: prompt, suppression, stop, signals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeasr.decoding import DecodeSettings, compression_ratio, greedy_decode

VOCAB = 8
EOS, SOT, NO_SPEECH = 0, 1, 2


class ScriptedModel:
    """Logits that favour a fixed sequence of tokens; records what the decoder feeds it."""

    def __init__(self, script: list[int], margin: float = 5.0) -> None:
        self.script, self.margin, self.fed = script, margin, []

    def step(self, new_tokens: list[int]) -> np.ndarray:
        self.fed.append(list(new_tokens))
        index = len(self.fed) - 1  # the row after the prompt predicts script[0], each later step the next
        rows = np.zeros((len(new_tokens), VOCAB), dtype=np.float32)
        if index < len(self.script):
            rows[-1, self.script[index]] = self.margin
        return rows


def settings(**changes) -> DecodeSettings:
    return DecodeSettings(**{"family": "whisper", "prompt": (SOT,), "eos_id": EOS, **changes})


def test_feeds_the_prompt_once_then_one_token_at_a_time():
    model = ScriptedModel([5, 6, 7, EOS])
    result = greedy_decode(model.step, settings(), max_new_tokens=10)
    assert result.tokens == [5, 6, 7] and not result.hit_token_limit and result.steps == 4
    assert model.fed == [[SOT], [5], [6], [7]]


def test_average_logprob_counts_the_end_token():
    result = greedy_decode(ScriptedModel([5, EOS]).step, settings(), max_new_tokens=10)
    # each chosen token has logit 5 against 7 zeros
    expected = 5 - math.log(math.exp(5) + VOCAB - 1)
    assert result.avg_logprob == pytest.approx(expected)


def test_token_limit_is_reported():
    result = greedy_decode(ScriptedModel([5, 6, 7, 5, 6, 7]).step, settings(), max_new_tokens=3)
    assert result.tokens == [5, 6, 7] and result.hit_token_limit


def test_suppressed_tokens_are_never_chosen():
    result = greedy_decode(ScriptedModel([5, 6, EOS]).step, settings(suppress=(6,)), max_new_tokens=4)
    assert 6 not in result.tokens and result.tokens[0] == 5


def test_begin_suppress_applies_to_the_first_token_only():
    # EOS first would end with nothing: begin_suppress forbids it at step 0 only
    result = greedy_decode(ScriptedModel([EOS, 5, EOS]).step, settings(begin_suppress=(EOS,)), max_new_tokens=5)
    assert result.tokens and result.steps >= 2


def test_no_speech_probability_is_read_at_the_prompt():
    model = ScriptedModel([NO_SPEECH], margin=20.0)
    result = greedy_decode(model.step, settings(no_speech_id=NO_SPEECH, suppress=(NO_SPEECH,)), max_new_tokens=2)
    assert result.no_speech_prob == pytest.approx(1.0, abs=1e-6)
    assert greedy_decode(ScriptedModel([EOS]).step, settings(), 2).no_speech_prob is None


def test_token_budget_follows_the_audio_and_the_positions():
    s = settings(max_positions=20, tokens_per_second=2.0, min_new_tokens=3)
    assert s.max_new_tokens(0.1) == 5                   # ceil(0.2) + 4
    assert s.max_new_tokens(100.0) == 19                # capped by the positions left after the prompt


def test_settings_from_a_whisper_generation_config():
    generation = {"decoder_start_token_id": 50257, "no_timestamps_token_id": 50362, "eos_token_id": 50256,
                  "suppress_tokens": [1, 2], "begin_suppress_tokens": [220, 50256]}
    s = DecodeSettings.from_configs("whisper", generation, {"max_target_positions": 448})
    assert s.prompt == (50257, 50362) and s.no_speech_id == 50361 and s.suppress == (1, 2)
    with pytest.raises(ValueError, match="unknown model family"):
        DecodeSettings.from_configs("wav2vec", {}, {})


def test_compression_ratio_flags_loops():
    assert compression_ratio("") == 0.0
    assert compression_ratio("the cat sat on the mat") < 2.4 < compression_ratio("thank you " * 40)
