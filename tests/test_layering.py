"""The import graph, read from the source (AST, imports inside functions included): no circle, and the
bundle runtime reaches neither torch nor the quantization side, even lazily.

The blocked-torch test (tests/test_export_runtime.py) runs a bundle with torch made unimportable; this one
also covers code paths that test does not execute.
"""

from __future__ import annotations

import ast
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"edgeasr": ROOT / "edgeasr", "edgeasr.demo": ROOT / "demo", "edgeasr.server": ROOT / "server"}
"""Package name → source folder, as pyproject's package-dir maps them."""

TORCH_SIDE = ("torch", "transformers", "safetensors", "onnx", "onnxscript")
"""Third-party packages of the `quant` extra: an edge install has none of them."""
RUNTIME_FORBIDDEN = ("edgeasr.quant", "edgeasr.backends", "edgeasr.export", "edgeasr.bench", "edgeasr.zoo")
"""Our modules that need the torch side (or build what the runtime only reads)."""


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            if not any(name.startswith(f"{other}.") or name == other
                       for other in PACKAGES if other != package and other.startswith(f"{package}.")):
                found[name] = path
    return found


MODULES = _modules()


def _imported(name: str, path: Path) -> set[str]:
    """Every module `name` imports, anywhere in the file: ours as module names, others as top-level names."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from package import submodule` imports the submodule.
            subs = {f"{module}.{alias.name}" for alias in node.names} & MODULES.keys()
            targets.update(subs or {module})
    resolved = set()
    for target in targets:
        if target in MODULES:
            resolved.add(target)
        elif target.split(".")[0] == "edgeasr":
            # `import edgeasr.x.y` where y is a name inside module x
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            resolved.add(target)
        else:
            resolved.add(target.split(".")[0])
    resolved.discard(name)
    return resolved


@lru_cache(maxsize=1)
def graph() -> dict[str, set[str]]:
    return {name: _imported(name, path) for name, path in MODULES.items()}


def reachable(start: str) -> dict[str, str]:
    """Everything `start` imports, directly or not, each with the module that imports it (for the message)."""
    seen, stack = {start: ""}, [start]
    while stack:
        current = stack.pop()
        for target in graph().get(current, ()):
            if target not in seen:
                seen[target] = current
                stack.append(target)
    return seen


def _chain(seen: dict[str, str], end: str) -> str:
    chain = [end]
    while seen[chain[-1]]:
        chain.append(seen[chain[-1]])
    return " → ".join(reversed(chain))


def test_the_walk_sees_the_package():
    assert {"edgeasr.engine", "edgeasr.runtime.backend", "edgeasr.server.app", "edgeasr.demo.tabs.live"} <= set(MODULES)
    assert "edgeasr.runtime.bundle" in graph()["edgeasr.runtime.backend"]
    assert "torch" in graph()["edgeasr.backends.hf"]


def test_no_circle_in_the_import_graph():
    # Tarjan's strongly connected components over our modules; any component of two or more is a circle.
    index, low, on_stack, stack, circles = {}, {}, set(), [], []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(MODULES)))

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph()[node]:
            if target not in MODULES:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(MODULES):
        if module not in index:
            visit(module)
    assert not circles, f"import circles: {circles}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("edgeasr.runtime")))
def test_runtime_reaches_neither_torch_nor_quant(module):
    seen = reachable(module)
    bad = [target for target in seen
           if target in TORCH_SIDE or any(target == f or target.startswith(f"{f}.") for f in RUNTIME_FORBIDDEN)]
    assert not bad, "\n".join(_chain(seen, target) for target in bad)


def test_no_private_name_is_imported_across_modules():
    found = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("edgeasr")):
                found += [f"{name} imports {alias.name} from {node.module}" for alias in node.names
                          if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not found, "\n".join(found)


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_installed():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    folders = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    folders |= {name.rpartition(".")[0] for name, path in MODULES.items() if path.name != "__init__.py"}
    assert folders <= listed, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(folders - listed)}"


IMPORT_TO_DIST = {"webrtcvad": "webrtcvad-wheels", "whisper_normalizer": "whisper-normalizer",
                  "faster_whisper": "faster-whisper", "moonshine_voice": "moonshine-voice", "yaml": "pyyaml"}
"""Import names whose distribution is called otherwise."""


def test_every_third_party_import_is_declared():
    from packaging.requirements import Requirement

    project = _pyproject()["project"]
    declared = {Requirement(line).name.lower().replace("_", "-")
                for line in project["dependencies"] + sum(project["optional-dependencies"].values(), [])}
    imported = {target for targets in graph().values() for target in targets
                if not target.startswith("edgeasr") and target not in sys.stdlib_module_names}
    missing = {name for name in imported if IMPORT_TO_DIST.get(name, name).replace("_", "-") not in declared}
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"
