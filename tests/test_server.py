"""The streaming server on a real uvicorn socket (127.0.0.1, free port): stream real speech, break the
protocol in every documented way while a healthy client keeps streaming, and hit each limit."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import threading
import time

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
websockets = pytest.importorskip("websockets")

from websockets.asyncio.client import connect  # noqa: E402

from edgeasr.audio import SAMPLE_RATE, prepare_audio, write_wav  # noqa: E402
from edgeasr.client import ClientOptions, IncompleteStreamError, ServerError, stream_async  # noqa: E402
from edgeasr.metrics.wer import normalize, utterance_wer  # noqa: E402
from edgeasr.registry import fetch_package, find_file  # noqa: E402
from edgeasr.stream import SessionOptions, StreamingSession  # noqa: E402
from edgeasr.zoo.catalog import MOONSHINE_VOICE  # noqa: E402
from edgeasr.server.app import STREAM_PATH, create_app  # noqa: E402
from edgeasr.server.options import ServerOptions  # noqa: E402
from edgeasr.protocol import CLOSE_CODES  # noqa: E402
from bad_audio import BAD_FILES  # noqa: E402
from listen_support import interrupt_after_first_partial, listen_command, long_speech  # noqa: E402

TOKEN = "test-token"
BECKETT = "ever tried ever failed no matter try again fail again fail better"
MAX_CLIENTS = 4
MAX_FRAME = 256 * 1024
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
                            max_clients=MAX_CLIENTS, idle_timeout=IDLE, max_frame_bytes=MAX_FRAME,
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
        after = []
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            for _ in range(5):
                after.append(json.loads(await asyncio.wait_for(ws.recv(), 15)))
        # Every close the server initiates comes with a summary, rejections included.
        assert [e["type"] for e in after] == ["summary"] and after[0]["reason"] == code
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
            await _expect_error(served.url, "frame_too_large", CONFIG, [b"\0" * (MAX_FRAME + 2)]),
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


def _no_drops(events: list[dict], audio: np.ndarray) -> bool:
    summary = events[-1]
    return (summary["type"] == "summary" and summary["dropped_seconds"] == 0
            and not any(e["type"] == "dropped" for e in events)
            and summary["audio_seconds"] == pytest.approx(audio.size / SAMPLE_RATE, abs=0.01))


def test_block_mode_splits_big_frames_and_loses_nothing(served, beckett):
    """5 s frames and 256 KiB frames (both over the 0.5 s queue bound) used to be dropped whole in block mode."""
    block = dict(partials=False, realtime=False, max_queue_seconds=0.5, overflow="block")
    reference = asyncio.run(_collect(served.url, beckett, **block))  # 100 ms frames
    assert _no_drops(reference, beckett) and _close_to_beckett(reference)
    for chunk_ms in (5000, 1000 * (MAX_FRAME // 2) // SAMPLE_RATE):  # 160,000 bytes; exactly MAX_FRAME bytes
        events = asyncio.run(_collect(served.url, beckett, chunk_ms=chunk_ms, **block))
        assert _no_drops(events, beckett), (chunk_ms, events[-1])
        assert utterance_wer(" ".join(_finals(reference)), " ".join(_finals(events))).wer <= 0.1, chunk_ms


def test_drop_mode_reports_every_drop(served, beckett):
    """1 s frames into a 0.5 s queue: what fits is decoded, the rest dropped, and every drop is an event."""
    events = asyncio.run(_collect(served.url, beckett, partials=False, realtime=False, chunk_ms=1000,
                                  max_queue_seconds=0.5))
    summary = events[-1]
    reported = sum(e["seconds"] for e in events if e["type"] == "dropped")
    assert summary["dropped_seconds"] > 0 and reported == pytest.approx(summary["dropped_seconds"], abs=0.01)
    assert summary["audio_seconds"] > 0 and summary["audio_seconds"] + summary["dropped_seconds"] == \
        pytest.approx(beckett.size / SAMPLE_RATE, abs=0.01)


def test_idle_timeout_completes_the_open_line(served, beckett):
    """Speech sent without `end`, then silence from the client: the line still open is decoded before 4408."""
    speech = beckett[:-SAMPLE_RATE]  # beckett's last word ends at the clip's end: the line is open when it stops

    async def main() -> tuple[list[dict], int]:
        async with connect(served.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, open_timeout=10) as ws:
            await ws.send(CONFIG)
            for chunk in np.array_split(speech, 100):
                await ws.send((chunk * 32767).astype("<i2").tobytes())
            events = []
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                for _ in range(100):
                    events.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
            return events, ws.close_code

    events, close_code = asyncio.run(main())
    assert close_code == CLOSE_CODES["idle_timeout"] and [e["type"] for e in events[-2:]] == ["error", "summary"]
    assert events[-2]["code"] == "idle_timeout" and events[-1]["lines"] == len(_finals(events))
    assert _close_to_beckett(events), _finals(events)


def test_strict_config_and_bounded_json(served):
    recipe = {"model": "moonshine-tiny", "method": "rtn", "w_bits": "8"}
    asyncio.run(_expect_error(served.url, "invalid_config", json.dumps({"sample_rate": 16000, "partials": "false"})))
    asyncio.run(_expect_error(served.url, "invalid_config", json.dumps({"sample_rate": 16000, "recipe": recipe})))
    asyncio.run(_expect_error(served.url, "invalid_config", "[" * 200_000))  # was 1011 (RecursionError)
    asyncio.run(_expect_error(served.url, "unexpected_text", CONFIG, ['{"type": ' * 40]))


def _no_constant(name: str):
    raise AssertionError(f"{name} is not JSON")


def test_http_no_speech_is_an_empty_200(served, tmp_path):
    """Silence, faint noise and a 0.1 s clip used to answer 500 (rtfx = Infinity cannot be JSON)."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    rng = np.random.default_rng(0)
    cases = {"silence": np.zeros(60 * SAMPLE_RATE, np.float32),
             "noise": (rng.standard_normal(20 * SAMPLE_RATE) * 10 ** (-50 / 20)).astype(np.float32),
             "short": (rng.standard_normal(SAMPLE_RATE // 10) * 0.01).astype(np.float32)}
    for name, audio in cases.items():
        path = tmp_path / f"{name}.wav"
        write_wav(path, audio)
        response = httpx.post(served.http + "/transcribe", content=path.read_bytes(), headers=auth, timeout=120)
        assert response.status_code == 200, (name, response.text)
        data = json.loads(response.text, parse_constant=_no_constant)
        assert data["text"] == "" and data["rtfx"] is None, name


def test_http_bad_files_are_a_clear_400(served):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for kind, (data, reason) in BAD_FILES.items():
        if not data:
            continue  # an empty body is refused before decoding ("empty upload")
        response = httpx.post(served.http + "/transcribe", content=data, headers=auth, timeout=30)
        message = response.json()["message"]
        assert response.status_code == 400 and message.startswith("upload: ") and reason in message, (kind, message)
        assert "/" not in message and "Traceback" not in message


def test_client_errors_when_the_stream_breaks(beckett):
    """A connection that closes before the summary is an error (client and edgeasr-listen), never a quiet end."""
    from websockets.asyncio.server import serve

    async def breaks(ws) -> None:  # a server that accepts the config, then drops the stream mid-way
        await ws.recv()
        await ws.send(json.dumps({"type": "ready"}))
        await ws.recv()
        await ws.close(1011, "keepalive ping timeout")

    async def main() -> None:
        async with serve(breaks, "127.0.0.1", 0) as server:
            url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}{STREAM_PATH}"
            with pytest.raises(IncompleteStreamError, match="1011"):
                async for _ in stream_async(url, beckett, SAMPLE_RATE, _options(realtime=False)):
                    pass
            listen = await asyncio.create_subprocess_exec(
                *listen_command(), "--server", url, "--file", long_speech(), "--fast", "--json",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            _, stderr = await asyncio.wait_for(listen.communicate(), 120)
            lines = stderr.decode().strip().splitlines()
            assert listen.returncode == 2 and len(lines) == 1 and "summary" in lines[0], lines

    asyncio.run(main())


def test_three_fast_listen_clients_of_a_long_file_finish(served, tmp_path):
    """Three `edgeasr-listen --server … --fast` at once used to stop after 66-82 s of a 161 s file with exit 0:
    block mode stopped reading, keepalive pings waited behind minutes of buffered audio, and the client took
    the 1011 close for a normal end. Now the client keeps at most a few acknowledged seconds in flight."""
    from edgeasr.data.moonshine import REFERENCES

    speech = prepare_audio(long_speech())
    path = tmp_path / "long.wav"
    write_wav(path, np.concatenate([speech, np.zeros(SAMPLE_RATE, np.float32)] * 3))  # 135 s
    command = listen_command() + ["--server", served.url, "--file", str(path), "--fast", "--json", "--no-partials"]
    env = {**os.environ, "EDGEASR_SERVER_TOKEN": TOKEN}
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(3)]
    try:
        outputs = [proc.communicate(timeout=900) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    reference = " ".join([REFERENCES["two_cities"]] * 3)
    for proc, (out, err) in zip(procs, outputs):
        finals = [e for e in map(json.loads, out.splitlines()) if e["type"] == "LineCompleted"]
        assert proc.returncode == 0 and finals, err
        assert utterance_wer(reference, " ".join(e["text"] for e in finals)).wer <= 0.15
        third = 2 * (speech.size + SAMPLE_RATE) / SAMPLE_RATE  # where the third reading starts
        assert finals[-1]["end"] > third + 0.9 * speech.size / SAMPLE_RATE  # its last sentence was decoded


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
