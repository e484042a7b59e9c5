"""The client's options and the wire config share one definition (`StreamRequest`); no server needed."""

from __future__ import annotations

import json
from dataclasses import fields

from edgeasr.client import ClientOptions
from edgeasr.protocol import StreamConfig, StreamRequest


def test_client_options_send_every_request_field_and_nothing_else() -> None:
    options = ClientOptions(token="t", model="m", partials=False, max_queue_seconds=1.5, overflow="block",
                            end_of_turn="vad", vad="silero", encoding="float32", chunk_ms=50, realtime=False)
    config = StreamConfig.of(options, 22050)
    assert StreamConfig.parse(config.message()) == config
    message = json.loads(config.message())
    request = {f.name for f in fields(StreamRequest)}
    assert message.pop("type") == "config" and message.pop("sample_rate") == 22050
    assert set(message) <= request and all(message[k] == getattr(options, k) for k in message)
    client_only = {f.name for f in fields(ClientOptions)} - request
    assert {"token", "chunk_ms", "realtime"} <= client_only and not client_only & set(json.loads(config.message()))
