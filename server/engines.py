"""Engines loaded once per process and shared by every connection; decodes run on a bounded thread pool.

Connections never load weights themselves: they ask the hub for a served name, and concurrent requests
for a model that is still loading wait on the same load.
"""

from __future__ import annotations

import asyncio
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, TypeVar

from edgeasr.engine import Engine
from edgeasr.paths import cache_dir
from edgeasr.protocol import ProtocolError, StreamConfig
from .options import ServerOptions

log = logging.getLogger(__name__)
T = TypeVar("T")
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def parse_recipe_flag(text: str) -> dict:
    """MODEL:METHOD:W_BITS (e.g. moonshine-tiny:rtn:8) → recipe dict."""
    parts = text.split(":")
    if len(parts) != 3 or not parts[2].isdigit():
        raise SystemExit(f"--recipe wants MODEL:METHOD:W_BITS (e.g. moonshine-tiny:rtn:8), got {text!r}")
    return {"model": parts[0], "method": parts[1], "w_bits": int(parts[2])}


def recipe_label(recipe: dict) -> str:
    from edgeasr.quant.recipe import Recipe

    allowed = {"model", "method", "w_bits", "a_bits", "group_size"}
    if not {"model", "method", "w_bits"} <= set(recipe) or set(recipe) - allowed:
        raise ProtocolError("invalid_config", f"recipe needs model, method, w_bits (optional a_bits, group_size); "
                                              f"got keys {sorted(recipe)}")
    try:
        return Recipe(**recipe).label
    except TypeError as exc:
        raise ProtocolError("invalid_config", f"bad recipe {recipe}: {exc}") from None


class EngineHub:
    """Served engines by name, plus the decode thread pool they all share."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.engines: dict[str, Engine] = {}
        self.default: str | None = None
        self._loading: dict[str, asyncio.Future] = {}
        self.pool = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="decode")

    # -- start-up -------------------------------------------------------------------------------

    def preload(self) -> None:
        """Load the configured models and recipes (blocking; called before serving)."""
        import torch

        torch.set_num_threads(self.options.resolved_torch_threads())
        for name in self.options.models:
            self._add(Engine.load(name), alias=name)
        for flag in self.options.recipes:
            from edgeasr.quant.api import load_or_quantize

            recipe = parse_recipe_flag(flag)
            self._add(Engine.load(load_or_quantize(recipe["model"], recipe["method"], recipe["w_bits"])))

    def _add(self, engine: Engine, alias: str | None = None) -> None:
        self.engines[engine.name] = engine
        if alias:
            self.engines[alias] = engine
        self.default = self.default or engine.name
        log.info("serving %s", engine.name)

    # -- per connection -------------------------------------------------------------------------

    async def get(self, config: StreamConfig) -> Engine:
        """The engine a config asks for; loads lazily where allowed, else ProtocolError('unknown_model')."""
        name, loader = self._resolve(config)
        if name in self.engines:
            return self.engines[name]
        if name not in self._loading:
            self._loading[name] = asyncio.ensure_future(asyncio.to_thread(loader))
        try:
            engine = await asyncio.shield(self._loading[name])
        except Exception as exc:
            log.exception("loading %s failed", name)
            raise ProtocolError("model_unavailable", f"{name} could not be loaded: {exc}") from None
        finally:
            if self._loading.get(name) is not None and self._loading[name].done():
                self._loading.pop(name, None)
        self.engines.setdefault(name, engine)
        return self.engines[name]

    def _resolve(self, config: StreamConfig) -> tuple[str, Callable[[], Engine]]:
        if config.checkpoint is not None:
            return self._checkpoint(config.checkpoint)
        if config.recipe is not None:
            label = recipe_label(config.recipe)
            if label in self.engines:
                return label, lambda: self.engines[label]
            return self._checkpoint(label)
        name = config.model or self.default
        if name in self.engines:
            return name, lambda: self.engines[name]
        from edgeasr.zoo import CATALOG

        if self.options.lazy_zoo and name in CATALOG:
            return name, lambda: Engine.load(name)
        raise ProtocolError("unknown_model", f"model {name!r} is not served here; GET /models lists "
                                             f"what is (loaded: {self.served_names()})")

    def _checkpoint(self, label: str) -> tuple[str, Callable[[], Engine]]:
        if label in self.engines:
            return label, lambda: self.engines[label]
        # Only names inside the server's own cache: a client must never make the server read arbitrary paths.
        path = cache_dir("checkpoints") / label
        if not _PLAIN_NAME.match(label) or not path.is_dir():
            raise ProtocolError("unknown_model", f"no quantized checkpoint {label!r} on this server; start it with "
                                                 f"--recipe MODEL:METHOD:W_BITS, or GET /models for what exists")
        return label, lambda: Engine.load(path)

    async def run(self, fn: Callable[..., T], *args) -> T:
        """Run a blocking decode on the shared pool, keeping the event loop free."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # -- introspection --------------------------------------------------------------------------

    def served_names(self) -> list[str]:
        return sorted(self.engines)

    def describe(self) -> dict:
        from edgeasr.zoo import CATALOG

        cached = sorted(p.name for p in cache_dir("checkpoints").iterdir() if p.is_dir() and _PLAIN_NAME.match(p.name))
        return {
            "default": self.default,
            "loaded": {name: {"name": e.name, "family": e.family} for name, e in sorted(self.engines.items())},
            "loading": sorted(self._loading),
            "loadable": sorted(CATALOG) if self.options.lazy_zoo else [],
            "checkpoints": cached,
            "workers": self.options.workers,
            "torch_threads": self.options.resolved_torch_threads(),
        }

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
