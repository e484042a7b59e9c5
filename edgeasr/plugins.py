"""The one registry pattern: a table of name → "module:attribute", imported when an entry is used.

The CLI's subcommands (`edgeasr.cli.COMMANDS`), the benchmarks (`edgeasr.commands.bench.BENCHES`) and
the quantization methods (`edgeasr.quant.methods.METHODS`) are such tables. A table shows every entry
in one place; the lazy import keeps `edgeasr --help` fast and lets an edge install (no torch) list
what it cannot run. tests/test_registries.py checks that every entry resolves and every module is listed.
"""

from __future__ import annotations

import importlib
from typing import Any


def load(target: str) -> Any:
    """The object a "package.module:attribute" entry names (importing the module)."""
    module, _, attribute = target.partition(":")
    if not attribute:
        raise ValueError(f"registry entry {target!r} is not of the form 'module:attribute'")
    return getattr(importlib.import_module(module), attribute)
