"""The streaming server on a real uvicorn socket (127.0.0.1, free port): stream real speech, break the
protocol in every documented way while a healthy client keeps streaming, and hit each limit."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
websockets = pytest.importorskip("websockets")

from websockets.asyncio.client import connect  # noqa: E402

from edgeasr.audio import SAMPLE_RATE, prepare_audio, write_wav  # noqa: E402
from edgeasr.client import ClientOptions, ServerError, stream_async  # noqa: E402
from edgeasr.metrics.wer import normalize, utterance_wer  # noqa: E402
from edgeasr.registry import fetch_package, find_file  # noqa: E402
from edgeasr.stream import SessionOptions, StreamingSession  # noqa: E402
from edgeasr.zoo.catalog import MOONSHINE_VOICE  # noqa: E402
from edgeasr.server.app import STREAM_PATH, create_app  # noqa: E402
from edgeasr.server.options import ServerOptions  # noqa: E402
from edgeasr.protocol import CLOSE_CODES  # noqa: E402
from listen_support import interrupt_after_first_partial, long_speech  # noqa: E402

TOKEN = "test-token"
BECKETT = "ever tried ever failed no matter try again fail again fail better"
MAX_CLIENTS = 4
IDLE = 2.0


class _Served:
    def __init__(self, app, port: int, server) -> None:
        self.app, self.port, self.server = app, port, server
        self.url = f"ws://127.0.0.1:{port}{STREAM_PATH}"
        self.http = f"http://127.0.0.1:{port}"

    @property
    def engine(self):
        return self.app.state.hub.engines["moonshine-tiny"]

    def metrics(self) -> dict:
        return httpx.get(self.http + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()


@pytest.fixture(scope="module")
def served():
    import uvicorn

    options = ServerOptions(host="127.0.0.1", port=0, token=TOKEN, models=("moonshine-tiny",), lazy_zoo=False,
                            max_clients=MAX_CLIENTS, idle_timeout=IDLE, max_frame_bytes=64 * 1024,
                            max_queue_seconds=30.0, workers=2, log_level="warning")
    app = create_app(options)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws_max_size=4 * options.max_frame_bytes))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 180  # includes loading the model
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.started, "server did not start"
    yield _Served(app, sock.getsockname()[1], server)
    server.should_exit = True
    thread.join(timeout=15)
    sock.close()


@pytest.fixture(scope="module")
def beckett() -> np.ndarray:
    audio = prepare_audio(find_file(fetch_package(MOONSHINE_VOICE), "assets/beckett.wav"))
    return np.concatenate([audio, np.zeros(SAMPLE_RATE, np.float32)])  # a second of silence ends the last line


def _options(**kw) -> ClientOptions:
    return ClientOptions(token=TOKEN, raise_on_error=False, **kw)


async def _collect(url: str, audio: np.ndarray, rate: int = SAMPLE_RATE, **kw) -> list[dict]:
    async def run() -> list[dict]:
        return [e async for e in stream_async(url, audio, rate, _options(**kw))]
    return await asyncio.wait_for(run(), timeout=120)


def _finals(events: list[dict]) -> list[str]:
    return [e["text"] for e in events if e["type"] == "LineCompleted"]


def _close_to_beckett(events: list[dict]) -> bool:
    # Streaming cuts lines at pauses, and tiny hears "fail" as "fare"/"fell" in short lines: allow 2 words.
    return utterance_wer(BECKETT, " ".join(_finals(events))).wer <= 0.2


async def _expect_error(url: str, code: str, first, then=(), token: str | None = TOKEN) -> dict:
    """Open a raw socket, send `first` then each of `then`; expect an error event `code` and its close code."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with connect(url, additional_headers=headers, open_timeout=10) as ws:
        try:  # the server may close before everything is sent (a rejection needs no audio)
            for i, message in enumerate([first, *then] if first is not None else []):
                await asyncio.sleep(0.05 * (i > 0))
                await ws.send(message)
        except websockets.exceptions.ConnectionClosed:
            pass
        error = None
        for _ in range(50):  # skip ready/partials; bounded by count and by the recv timeout
            event = json.loads(await asyncio.wait_for(ws.recv(), 15))
            if event["type"] == "error":
                error = event
                break
        assert error is not None and error["code"] == code, error
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            for _ in range(5):
                await asyncio.wait_for(ws.recv(), 15)
        assert ws.close_code == CLOSE_CODES[code]
        return error


CONFIG = json.dumps({"sample_rate": SAMPLE_RATE, "encoding": "pcm16", "partials": False})


def test_finals_match_a_local_session(served, beckett):
    events = asyncio.run(_collect(served.url, beckett, partials=False, realtime=False))
    assert events[0]["type"] == "ready" and events[-1]["type"] == "summary"
    local = StreamingSession(served.engine, SessionOptions(partials=False))
    expected = [e.text for chunk in np.array_split(beckett, 37) for e in local.accept(chunk)
                if e.to_dict()["type"] == "LineCompleted"]
    expected += [e.text for e in local.finish() if e.to_dict()["type"] == "LineCompleted"]
    assert _finals(events) == expected and _close_to_beckett(events)
    final = next(e for e in events if e["type"] == "LineCompleted")
    assert final["e2e_ms"] is not None and final["decode_ms"] > 0 and "latency_ms" in final
    summary = events[-1]
    assert summary["dropped_seconds"] == 0 and summary["lines"] == len(expected)
    assert summary["audio_seconds"] == pytest.approx(beckett.size / SAMPLE_RATE, abs=0.01)


def test_resampled_float32_stream(served, beckett):
    import soxr

    audio = soxr.resample(beckett, SAMPLE_RATE, 44100).astype(np.float32)
    events = asyncio.run(_collect(served.url, audio, 44100, encoding="float32", partials=False, realtime=False))
    assert _close_to_beckett(events)


def test_bad_inputs_are_rejected_while_a_healthy_client_streams(served, beckett):
    pcm = (beckett[:SAMPLE_RATE] * 32767).astype("<i2").tobytes()

    async def abrupt_disconnect() -> None:
        ws = await connect(served.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, open_timeout=10)
        await ws.send(CONFIG)
        await ws.send(pcm)
        ws.transport.abort()  # drop TCP without a close handshake

    async def bad_clients() -> list[dict]:
        await asyncio.sleep(1.0)  # let the healthy stream get going
        errors = [
            await _expect_error(served.url, "invalid_config", "{not json"),
            await _expect_error(served.url, "invalid_config", json.dumps({"encoding": "pcm16"})),
            await _expect_error(served.url, "invalid_config", json.dumps({"sample_rate": 0})),
            await _expect_error(served.url, "invalid_config", json.dumps({"sample_rate": "16k"})),
            await _expect_error(served.url, "invalid_config", json.dumps({"sample_rate": 16000, "encoding": "mp3"})),
            await _expect_error(served.url, "invalid_config", pcm),  # audio before the config
            await _expect_error(served.url, "unknown_model", json.dumps({"sample_rate": 16000, "model": "nope"})),
            await _expect_error(served.url, "unknown_model",
                                json.dumps({"sample_rate": 16000, "checkpoint": "../../etc"})),
            await _expect_error(served.url, "bad_frame", CONFIG, [pcm[:3]]),
            await _expect_error(served.url, "frame_too_large", CONFIG, [b"\0" * (64 * 1024 + 2)]),
            await _expect_error(served.url, "unexpected_text", CONFIG, [pcm[:3200], "hello"]),
            await _expect_error(served.url, "unauthorized", CONFIG, token="wrong"),
            await _expect_error(served.url, "unauthorized", CONFIG, token=None),
        ]
        await abrupt_disconnect()
        return errors

    async def main():
        return await asyncio.gather(_collect(served.url, beckett, partials=True, realtime=True), bad_clients())

    before = served.metrics()
    healthy, errors = asyncio.run(main())
    assert all(e["message"] for e in errors)
    assert healthy[-1]["type"] == "summary" and healthy[-1]["dropped_seconds"] == 0
    assert _close_to_beckett(healthy)
    types = [e["type"] for e in healthy]
    assert "LineStarted" in types and "error" not in types
    final = next(e for e in healthy if e["type"] == "LineCompleted")
    assert final["cost"] is None or isinstance(final["cost"], dict)
    assert 0 <= final["e2e_ms"] < 10_000
    after = served.metrics()
    deadline = time.monotonic() + 10
    while after["connections"]["abrupt_disconnects"] <= before["connections"]["abrupt_disconnects"] \
            and time.monotonic() < deadline:
        time.sleep(0.2)
        after = served.metrics()
    assert after["connections"]["abrupt_disconnects"] > before["connections"]["abrupt_disconnects"]
    assert after["connections"]["rejected"]["unauthorized"] >= 2
    assert after["connections"]["errors"]["bad_frame"] >= 1
    assert after["connections"]["active"] == 0


def test_max_clients_and_idle_timeout(served):
    async def main():
        headers = {"Authorization": f"Bearer {TOKEN}"}
        holders = [await connect(served.url, additional_headers=headers, open_timeout=10) for _ in range(MAX_CLIENTS)]
        try:
            for ws in holders:
                await ws.send(CONFIG)
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
            await _expect_error(served.url, "too_many_clients", None)
            start = time.monotonic()
            event = json.loads(await asyncio.wait_for(holders[0].recv(), IDLE + 10))
            assert event["code"] == "idle_timeout" and time.monotonic() - start < IDLE + 5
        finally:
            for ws in holders:
                await ws.close()

    asyncio.run(main())


def test_backpressure_drops_are_reported(served, beckett):
    events = asyncio.run(_collect(served.url, beckett, partials=True, realtime=False, max_queue_seconds=0.5))
    dropped = [e for e in events if e["type"] == "dropped"]
    assert dropped and events[-1]["dropped_seconds"] > 0
    assert served.metrics()["dropped_seconds"] > 0


def test_block_overflow_loses_nothing(served, beckett):
    events = asyncio.run(_collect(served.url, beckett, partials=False, realtime=False, max_queue_seconds=0.5,
                                  overflow="block"))
    assert events[-1]["dropped_seconds"] == 0 and _close_to_beckett(events)


def test_client_raises_on_rejection(served, beckett):
    async def main():
        options = ClientOptions(token="wrong")
        return [e async for e in stream_async(served.url, beckett, SAMPLE_RATE, options)]

    with pytest.raises(ServerError) as info:
        asyncio.run(asyncio.wait_for(main(), 30))
    assert info.value.code == "unauthorized"


def test_http_endpoints(served, beckett, tmp_path):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(served.http + "/health", timeout=10).json()["status"] == "ok"
    assert httpx.get(served.http + "/models", timeout=10).status_code == 401
    models = httpx.get(served.http + "/models", headers=auth, timeout=10).json()
    assert models["default"] == "moonshine-tiny"
    path = tmp_path / "beckett.wav"
    write_wav(path, beckett)
    response = httpx.post(served.http + "/transcribe", content=path.read_bytes(), headers=auth, timeout=120)
    assert response.status_code == 200 and normalize(response.json()["text"]) == BECKETT
    bad = httpx.post(served.http + "/transcribe", content=b"not audio", headers=auth, timeout=30)
    assert bad.status_code == 400
    metrics = served.metrics()
    assert metrics["final_latency_ms"]["count"] > 0 and metrics["audio_seconds"] > 0


def test_listen_cli_ctrl_c_waits_for_the_servers_final(served):
    partial, after, returncode, stderr = interrupt_after_first_partial(
        ["--server", served.url, "--file", long_speech()], env={"EDGEASR_SERVER_TOKEN": TOKEN})
    assert returncode == 0, stderr
    completed = [e for e in after if e["type"] == "LineCompleted"]
    # `end` went to the server, which finished the open line; the CLI printed that final before exiting.
    assert completed and completed[-1]["line_id"] == partial["line_id"]
    assert completed[-1]["text"].strip() and completed[-1]["end"] < 40.0


def test_non_loopback_needs_a_token():
    with pytest.raises(SystemExit, match="token"):
        ServerOptions(host="0.0.0.0", token=None).check_auth_policy()
    ServerOptions(host="0.0.0.0", token="x").check_auth_policy()
    ServerOptions(host="127.0.0.1", token=None).check_auth_policy()
