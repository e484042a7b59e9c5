"""WebSocket streaming server for edgeasr: one shared Engine per model, one StreamingSession per connection.

Run it with `edgeasr-server` (see docs/protocol.md for the protocol); build an app in-process with
`edgeasr.server.app.create_app(ServerOptions(...))`.
"""

from .options import ServerOptions

__all__ = ["ServerOptions"]
