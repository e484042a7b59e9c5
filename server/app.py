"""FastAPI app and the `edgeasr-server` command: WebSocket streaming plus /health, /models, /metrics, /transcribe."""

from __future__ import annotations

import argparse
import hmac
import logging
from contextlib import asynccontextmanager
from dataclasses import fields

from fastapi import FastAPI, HTTPException, Request, Response, WebSocket
from fastapi.responses import JSONResponse

from edgeasr.audio import check_file_length, load_audio, prepare_audio
from edgeasr.errors import AudioError
from edgeasr.protocol import STREAM_PATH, ProtocolError, StreamConfig, dumps
from edgeasr.resolver import ENGINES

from .connection import Connection
from .engines import EngineHub
from .metrics import Metrics
from .options import ServerOptions

log = logging.getLogger(__name__)
UPLOAD = "upload"
"""How error messages name a POSTed file."""


def _token_of(headers, query) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return query.get("token")


def create_app(options: ServerOptions) -> FastAPI:
    """The app; models are loaded when it starts (lifespan), before the first connection is accepted."""
    options.check_auth_policy()
    hub, metrics = EngineHub(options), Metrics()

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        hub.preload()
        yield
        hub.close()

    app = FastAPI(title="edgeasr streaming server", lifespan=lifespan)
    app.state.hub, app.state.metrics, app.state.options = hub, metrics, options

    def authorised(headers, query) -> bool:
        if not options.token:
            return True
        given = _token_of(headers, query) or ""
        return hmac.compare_digest(given.encode(), options.token.encode())

    def require_token(request: Request) -> None:
        if not authorised(request.headers, request.query_params):
            raise HTTPException(401, "missing or wrong token: send 'Authorization: Bearer <token>' or ?token=")

    @app.websocket(STREAM_PATH)
    async def stream(ws: WebSocket) -> None:
        # Accept first so the rejection reaches the client as a close code and an error event it can read.
        await ws.accept()
        rejection = None
        if not authorised(ws.headers, ws.query_params):
            rejection = ProtocolError("unauthorized", "missing or wrong token: send 'Authorization: Bearer <token>' "
                                                      "or ?token= in the URL")
        elif metrics.active >= options.max_clients:
            rejection = ProtocolError("too_many_clients", f"server is at its limit of {options.max_clients} "
                                                          f"streams; retry later")
        if rejection is not None:
            metrics.rejected[rejection.code] += 1
            await Connection(ws, hub, metrics, options).close_with(rejection)  # error, summary, close
            return
        metrics.active += 1
        metrics.connections += 1
        try:
            await Connection(ws, hub, metrics, options).serve()
        finally:
            metrics.active -= 1

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "models": hub.served_names(), "active": metrics.active}

    @app.get("/models")
    async def models(request: Request) -> dict:
        require_token(request)
        return hub.describe()

    @app.get("/metrics")
    async def metrics_view(request: Request) -> dict:
        require_token(request)
        return {**metrics.snapshot(), "max_clients": options.max_clients}

    @app.post("/transcribe")
    async def transcribe(request: Request, model: str | None = None, checkpoint: str | None = None):
        """Whole-file transcription: the body is the audio file (WAV; other formats need PyAV), or a
        multipart form with a `file` field."""
        require_token(request)
        body = await _read_upload(request, options.max_upload_bytes)
        try:
            engine = await hub.get(StreamConfig(16000, model=model, checkpoint=checkpoint))
        except ProtocolError as exc:
            return JSONResponse(exc.event(), status_code=404 if exc.code == "unknown_model" else 400)
        try:
            # Decoded from memory and called "upload" in messages: no temp path or FFmpeg text reaches the client.
            samples = await hub.run(_upload_audio, body)
        except AudioError as exc:
            return JSONResponse({"type": "error", "code": "bad_audio", "message": str(exc)}, status_code=400)
        transcript = await hub.run(engine.transcribe, samples)
        metrics.http_transcriptions += 1
        metrics.audio_seconds += transcript.audio_seconds
        return Response(dumps({"model": engine.name, **transcript.to_dict()}), media_type="application/json")

    return app


def _upload_audio(body: bytes):
    """The upload's audio at 16 kHz mono; AudioError saying what is wrong with it."""
    samples = prepare_audio(*load_audio(body, UPLOAD), name=UPLOAD)
    check_file_length(samples, UPLOAD)
    return samples


async def _read_upload(request: Request, limit: int) -> bytes:
    if int(request.headers.get("content-length") or 0) > limit:
        raise HTTPException(413, f"upload larger than {limit} bytes")
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(400, "multipart upload needs a `file` field holding the audio")
        data = await upload.read(limit + 1)
    else:
        chunks, size = [], 0
        async for chunk in request.stream():  # bounded read: chunked uploads carry no content-length
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"upload larger than {limit} bytes")
            chunks.append(chunk)
        data = b"".join(chunks)
    if not data or len(data) > limit:
        raise HTTPException(400 if not data else 413, "empty upload" if not data else f"upload larger than {limit} bytes")
    return data


def build_parser() -> argparse.ArgumentParser:
    d = ServerOptions()
    p = argparse.ArgumentParser(prog="edgeasr-server", description="edgeasr WebSocket streaming server "
                                "(protocol: docs/protocol.md)")
    p.add_argument("--host", default=d.host, help="interface to bind (non-loopback needs --token)")
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--token", default=None, help="shared secret (default: $EDGEASR_SERVER_TOKEN)")
    p.add_argument("--allow-no-auth", action="store_true", help="serve a non-loopback interface without a token")
    p.add_argument("--model", dest="models", action="append", help="model to load at start (repeatable; "
                   f"zoo name, checkpoint or bundle dir); default {d.models[0]}")
    p.add_argument("--recipe", dest="recipes", action="append", default=[],
                   help="quantized recipe to load, MODEL:METHOD:W_BITS[:A_BITS[:GROUP_SIZE]] (e.g. moonshine-tiny:rtn:8); "
                        "repeatable")
    p.add_argument("--engine", choices=ENGINES, default=d.engine, help="bundle (packed ONNX, exported on first use), "
                   "torch (fake-quant), or auto: the bundle wherever one can represent the recipe (default)")
    p.add_argument("--no-lazy-zoo", dest="lazy_zoo", action="store_false", help="serve only the preloaded models")
    for name in ("workers", "threads", "max_clients", "max_frame_bytes", "max_upload_bytes"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    for name in ("max_queue_seconds", "late_ms", "idle_timeout", "max_session_seconds"):
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    p.add_argument("--log-level", default=d.log_level)
    return p


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    values = {f.name: getattr(args, f.name) for f in fields(ServerOptions) if getattr(args, f.name, None) is not None}
    values["models"] = tuple(args.models or ServerOptions().models)
    values["recipes"] = tuple(args.recipes)
    return ServerOptions(**values)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    options = options_from_args(build_parser().parse_args(argv))
    logging.basicConfig(level=options.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    app = create_app(options)
    # Frames up to 4x the app limit reach the app and get its clear 4413; larger ones the protocol cuts (1009).
    uvicorn.run(app, host=options.host, port=options.port, log_level=options.log_level,
                ws_max_size=4 * options.max_frame_bytes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
