"""The wire schema (`edgeasr.protocol`) on its own: config messages, frames, JSON limits. No server, no model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgeasr.protocol import (CLOSE_CODES, CONFIG, MAX_JSON_DEPTH, MAX_TEXT_BYTES, ProtocolError, StreamConfig,
                              decode_frame, dumps, encode_frame, is_end, parse_text)


@pytest.mark.parametrize("config", [
    StreamConfig(16000),
    StreamConfig(48000, encoding="float32", model="moonshine-tiny", partials=False, max_queue_seconds=2.5, overflow="block"),
    StreamConfig(8000, recipe={"model": "moonshine-tiny", "method": "rtn", "w_bits": 8, "group_size": 64}),
    StreamConfig(44100, checkpoint="moonshine-tiny-gptq-w4a16g64", end_of_turn="vad"),
], ids=["minimal", "model", "recipe", "checkpoint"])
def test_config_round_trip(config):
    message = config.message()
    assert json.loads(message)["type"] == CONFIG and "null" not in message  # None fields are left out
    assert StreamConfig.parse(message) == config


@pytest.mark.parametrize("message, words", [
    ('[16000]', "JSON object"),
    ('{"type": "end"}', "must be the config"),
    ('{"encoding": "pcm16"}', "sample_rate is required"),
    ('{"sample_rate": 16000.5}', "integer between"),
    ('{"sample_rate": 4000}', "integer between"),
    ('{"sample_rate": true}', "integer between"),
    ('{"sample_rate": 16000, "encoding": "mp3"}', "encoding must be one of"),
    ('{"sample_rate": 16000, "model": "a", "checkpoint": "b"}', "one of model / recipe / checkpoint"),
    ('{"sample_rate": 16000, "model": 3}', "model must be a string"),
    ('{"sample_rate": 16000, "recipe": {"model": "m", "method": "rtn"}}', "missing ['w_bits']"),
    ('{"sample_rate": 16000, "recipe": {"model": "m", "method": "rtn", "w_bits": "8"}}', "must be an integer"),
    ('{"sample_rate": 16000, "partials": "yes"}', "JSON boolean"),
    ('{"sample_rate": 16000, "max_queue_seconds": 0}', "positive number"),
    ('{"sample_rate": 16000, "overflow": "wait"}', "overflow must be one of"),
    ('{"sample_rate": 16000, "end_of_turn": "psychic"}', "end_of_turn must be one of"),
    ('{"sample_rate": 16000, "rate": 1}', "unknown config keys"),
    ('{"sample_rate": NaN}', "not valid JSON"),
    ("not json", "not valid JSON"),
])
def test_bad_configs_are_refused_with_the_reason(message, words):
    with pytest.raises(ProtocolError) as info:
        StreamConfig.parse(message)
    assert info.value.code == "invalid_config" and words in info.value.message
    event = info.value.event()
    assert event["type"] == "error" and event["close_code"] == CLOSE_CODES["invalid_config"] == 4400


def test_text_limits():
    deep = "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
    with pytest.raises(ProtocolError, match="nested deeper"):
        parse_text(deep, "unexpected_text")
    assert parse_text('{"a": "[[[[[[[[[[[["}', "unexpected_text") == {"a": "[" * 12}  # brackets in strings
    with pytest.raises(ProtocolError, match="bytes"):
        parse_text('"' + "x" * MAX_TEXT_BYTES + '"', "unexpected_text")


def test_end_message():
    assert is_end(parse_text('{"type": "end"}', "unexpected_text"))
    assert not is_end(parse_text('{"type": "config"}', "unexpected_text")) and not is_end([1])


def test_dumps_writes_no_infinity():
    text = dumps({"p95": math.inf, "values": [1.5, math.nan], "nested": {"x": -math.inf}})
    assert json.loads(text) == {"p95": None, "values": [1.5, None], "nested": {"x": None}}


@pytest.mark.parametrize("encoding, tolerance", [("pcm16", 1e-4), ("float32", 0.0)])  # pcm16: a few LSBs
def test_frames_round_trip(encoding, tolerance):
    chunk = np.sin(np.linspace(0, 20, 1600)).astype(np.float32) * 0.9
    assert np.allclose(decode_frame(encode_frame(chunk, encoding), encoding), chunk, atol=tolerance)


def test_pcm16_clips_out_of_range_samples():
    assert np.allclose(decode_frame(encode_frame(np.array([2.0, -2.0]), "pcm16"), "pcm16"), [1.0, -1.0], atol=1e-4)


def test_bad_frames():
    with pytest.raises(ProtocolError, match="whole number") as info:
        decode_frame(b"\x00\x01\x02", "pcm16")
    assert info.value.close_code == 4415
    with pytest.raises(ProtocolError, match="NaN or infinite"):
        decode_frame(np.array([0.0, np.nan], dtype="<f4").tobytes(), "float32")
