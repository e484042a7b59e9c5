"""The three registries (CLI subcommands, benchmarks, quantization methods) follow one pattern
(`edgeasr.plugins`): every entry resolves, and every module that should be listed is."""

from __future__ import annotations

import dataclasses
import pkgutil

import pytest

import edgeasr.commands
import edgeasr.quant.methods
from edgeasr.cli import COMMANDS, build_parser
from edgeasr.commands.bench import BENCHES
from edgeasr.errors import QuantizationError
from edgeasr.plugins import load
from edgeasr.quant.methods import METHODS, available_methods, get_method


def public_modules(package) -> set[str]:
    return {m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")}


def test_every_command_module_is_listed_and_resolves():
    assert {target.split(":")[0].rpartition(".")[2] for target in COMMANDS.values()} == public_modules(edgeasr.commands)
    assert all(callable(load(target)) for target in COMMANDS.values())


def test_the_parser_has_every_subcommand_and_benchmark():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert {"bench", "data", "export", "fetch", "models", "quantize", "report", "sweep", "transcribe", "eval"} <= set(commands)
    benches = next(a for a in commands["bench"]._actions if a.dest == "bench").choices
    assert set(benches) == set(BENCHES)
    args = parser.parse_args(["quantize", "--recipe", "moonshine-tiny-rtn-w8a16g64"])
    assert args.handler.__module__ == "edgeasr.commands.quantize"


def test_every_method_module_is_listed_and_declares_itself():
    assert {target.split(":")[0].rpartition(".")[2] for target in METHODS.values()} == public_modules(edgeasr.quant.methods)
    methods = available_methods()
    assert list(methods) == sorted(METHODS) and len(methods) == 10
    for name, info in methods.items():
        assert info.name == name and callable(info.run) and dataclasses.is_dataclass(info.options)
        info.make_options({})  # every option has a default


def test_unknown_method_and_option_are_clear_errors():
    with pytest.raises(QuantizationError, match="unknown method 'gtpq'; available: awq, gptq"):
        get_method("gtpq")
    with pytest.raises(QuantizationError, match="has no option"):
        get_method("rtn").make_options({"alpha": 0.5})


def test_a_malformed_entry_is_refused():
    with pytest.raises(ValueError, match="module:attribute"):
        load("edgeasr.quant.methods.rtn")
