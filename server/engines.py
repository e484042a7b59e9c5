"""Engines loaded once per process and shared by every connection; decodes run on a bounded thread pool.

Connections never load weights themselves: they ask the hub for a served name, and concurrent requests
for a model that is still loading wait on the same load. Every engine comes from `edgeasr.resolver`, so
the server runs packed bundles (ONNX Runtime) by default and imports torch only where a recipe has no
bundle (or `--engine torch`): the server extra runs without torch on cached bundles.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Callable, TypeVar

from edgeasr.engine import Engine
from edgeasr.paths import cache_dir
from edgeasr.protocol import ProtocolError, StreamConfig
from edgeasr.quant.recipe import Recipe
from edgeasr.resolver import NotCachedError, ResolveOptions, Target, cached_bundles, parse_target, resolve
from edgeasr.stream.scheduler import DecodeScheduler
from .options import ServerOptions

log = logging.getLogger(__name__)
T = TypeVar("T")
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_RECIPE_KEYS = {"model", "method", "w_bits", "a_bits", "group_size"}


def config_recipe(recipe: dict) -> Recipe:
    """A config message's recipe dict → Recipe, or ProtocolError('invalid_config')."""
    if not {"model", "method", "w_bits"} <= set(recipe) or set(recipe) - _RECIPE_KEYS:
        raise ProtocolError("invalid_config", f"recipe needs model, method, w_bits (optional a_bits, group_size); "
                                              f"got keys {sorted(recipe)}")
    try:
        return Recipe(**recipe)
    except TypeError as exc:
        raise ProtocolError("invalid_config", f"bad recipe {recipe}: {exc}") from None


class EngineHub:
    """Served engines by name, plus the decode thread pool they all share."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.engines: dict[str, Engine] = {}
        self.default: str | None = None
        self._loading: dict[str, asyncio.Future] = {}
        self.pool = DecodeScheduler(options.workers)
        """Finals and end-of-turn decisions first, partials last (see edgeasr/stream/scheduler.py)."""

    def resolve_options(self, quantize: bool) -> ResolveOptions:
        return ResolveOptions(engine=self.options.engine, threads=self.options.resolved_threads(), quantize=quantize)

    # -- start-up -------------------------------------------------------------------------------

    def preload(self) -> None:
        """Load the configured models and recipes (blocking; called before serving): quantized and exported
        on first use, as the operator asked for them."""
        for name in self.options.models:
            self._add(resolve(parse_target(name), self.resolve_options(quantize=True)), alias=name)
        for flag in self.options.recipes:
            self._add(resolve(parse_target(flag), self.resolve_options(quantize=True)), alias=flag)

    def _add(self, engine: Engine, alias: str | None = None) -> None:
        self.engines[engine.name] = engine
        if alias:
            self.engines[alias] = engine
        self.default = self.default or alias or engine.name
        log.info("serving %s on the %s engine%s", engine.name, engine.kind,
                 f" ({engine.why})" if engine.why else "")

    # -- per connection -------------------------------------------------------------------------

    async def get(self, config: StreamConfig) -> Engine:
        """The engine a config asks for; loads lazily where allowed, else ProtocolError('unknown_model')."""
        name, target = self._target(config)
        if name in self.engines:
            return self.engines[name]
        if name not in self._loading:
            # A client may make the server export a cached checkpoint or zoo model once, never quantize.
            loader = lambda: resolve(target, self.resolve_options(quantize=False))  # noqa: E731
            self._loading[name] = asyncio.ensure_future(asyncio.to_thread(loader))
        try:
            engine = await asyncio.shield(self._loading[name])
        except NotCachedError as exc:
            raise ProtocolError("unknown_model", f"{exc}; start the server with --recipe, or GET /models for what "
                                                 "exists") from None
        except Exception as exc:
            log.exception("loading %s failed", name)
            raise ProtocolError("model_unavailable", f"{name} could not be loaded: {exc}") from None
        finally:
            if self._loading.get(name) is not None and self._loading[name].done():
                self._loading.pop(name, None)
        self.engines.setdefault(name, engine)
        return self.engines[name]

    def _target(self, config: StreamConfig) -> tuple[str, Target]:
        """(served name, what to resolve when it is not loaded yet)."""
        if config.checkpoint is not None:
            label = config.checkpoint
            if label in self.engines:
                return label, label
            # Only names inside the server's own cache: a client must never make the server read arbitrary paths.
            path = cache_dir("checkpoints") / label
            if not _PLAIN_NAME.match(label) or not path.is_dir():
                raise ProtocolError("unknown_model", f"no quantized checkpoint {label!r} on this server; start it "
                                                     f"with --recipe MODEL:METHOD:W_BITS, or GET /models for what exists")
            return label, path
        if config.recipe is not None:
            recipe = config_recipe(config.recipe)
            return recipe.label, recipe
        name = config.model or self.default
        if name in self.engines:
            return name, name
        from edgeasr.zoo import CATALOG

        if self.options.lazy_zoo and name in CATALOG:
            return name, name
        raise ProtocolError("unknown_model", f"model {name!r} is not served here; GET /models lists "
                                             f"what is (loaded: {self.served_names()})")

    async def run(self, fn: Callable[..., T], *args) -> T:
        """Run a blocking decode on the shared pool (final priority), keeping the event loop free."""
        return await self.pool.run(fn, *args)

    # -- introspection --------------------------------------------------------------------------

    def served_names(self) -> list[str]:
        return sorted(self.engines)

    def describe(self) -> dict:
        from edgeasr.zoo import CATALOG

        cached = sorted(p.name for p in cache_dir("checkpoints").iterdir() if p.is_dir() and _PLAIN_NAME.match(p.name))
        return {
            "default": self.default,
            "loaded": {name: {"name": e.name, "family": e.family, "engine": e.kind, "engine_reason": e.why}
                       for name, e in sorted(self.engines.items())},
            "loading": sorted(self._loading),
            "loadable": sorted(CATALOG) if self.options.lazy_zoo else [],
            "checkpoints": cached,
            "bundles": sorted({data.get("label", path.name) for path, data in cached_bundles()}),
            "engine": self.options.engine,
            "workers": self.options.workers,
            "threads": self.options.resolved_threads(),
        }

    def close(self) -> None:
        self.pool.close()
