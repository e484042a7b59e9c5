"""Server options: one dataclass whose defaults the `edgeasr-server` flags mirror."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from edgeasr.protocol import TOKEN_ENV


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServerOptions:
    """Limits, models and auth of one server process."""

    host: str = "127.0.0.1"
    """Interface to bind; anything but loopback requires a token unless `allow_no_auth`."""
    port: int = 8765
    """TCP port (0 = a free one, reported once bound)."""
    token: str | None = field(default_factory=lambda: os.environ.get(TOKEN_ENV) or None)
    """Shared secret clients send as `Authorization: Bearer <token>` or `?token=`; default from $EDGEASR_SERVER_TOKEN."""
    allow_no_auth: bool = False
    """Serve without a token on a non-loopback interface (explicit opt-out)."""
    models: tuple[str, ...] = ("moonshine-tiny",)
    """Models loaded at start-up (zoo names, recipe .toml files, checkpoint or bundle dirs, bundle archives);
    the first is the default."""
    recipes: tuple[str, ...] = ()
    """Quantized recipes loaded at start-up as MODEL:METHOD:W_BITS[:A_BITS[:GROUP_SIZE]] (quantized and
    exported once, then cached)."""
    engine: str = "auto"
    """auto: packed bundles (ONNX Runtime) wherever one can represent the recipe, else torch; bundle; torch."""
    lazy_zoo: bool = True
    """Load other zoo models on first request (they stay loaded)."""
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    """Decode threads shared by all connections (at most this many decodes run at once)."""
    threads: int = 0
    """Intra-op threads per decode (ONNX Runtime; torch for torch engines); 0 = cores // workers, so workers ×
    threads never oversubscribes."""
    max_clients: int = 16
    """Concurrent streaming connections; more are closed with 4429."""
    max_queue_seconds: float = 3.0
    """Audio a connection may have waiting for decode; beyond it new audio is dropped and reported."""
    late_ms: float = 1000.0
    """Audio that waited longer than this before decode counts as late."""
    idle_timeout: float = 10.0
    """Seconds without a frame (or without the config message) before the connection is closed with 4408."""
    max_frame_bytes: int = 256 * 1024
    """Largest binary frame accepted (4413 beyond); 256 KiB is 8 s of 16 kHz PCM16."""
    max_session_seconds: float = 3600.0
    """Audio seconds one connection may stream before it is finished and closed with 4409."""
    max_upload_bytes: int = 64 * 1024 * 1024
    """Largest body POST /transcribe accepts."""
    log_level: str = "info"
    """uvicorn log level."""

    def check_auth_policy(self) -> None:
        """Refuse to serve the network without a token (a microphone feed is private data)."""
        if not self.token and not self.allow_no_auth and not is_loopback(self.host):
            raise SystemExit(f"edgeasr-server: binding {self.host} needs a token: pass --token or set ${TOKEN_ENV} "
                             f"(or --allow-no-auth to serve without one)")

    def resolved_threads(self) -> int:
        return self.threads or max(1, (os.cpu_count() or 1) // max(1, self.workers))
