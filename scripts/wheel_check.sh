#!/usr/bin/env bash
# Wheel check: build the wheel, install it into a fresh venv outside the checkout, and run the installed
# tool from a folder that holds no source: quantize a recipe shipped inside the wheel (by name), export it,
# and transcribe a file through the bundle with edgeasr-listen. The venv reuses this machine's packages
# (--system-site-packages: torch & co.) but edgeasr itself must come from the wheel.
# Needs moonshine-tiny and the moonshine-samples set in the cache (`make setup`). ~1 minute.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
recipe=moonshine-tiny-rtn-w8a16g64

"$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" "$repo"
"$PYTHON" -m venv --system-site-packages "$work/venv"
"$work/venv/bin/python" -m pip install -q --no-deps --disable-pip-version-check "$work"/dist/edgeasr-*.whl
cd "$work"
py="$work/venv/bin/python"

echo "== the installed package, its demo, server and data come from the wheel"
"$py" - "$repo" <<'PY'
import sys
from pathlib import Path

import edgeasr.demo.app, edgeasr.server.app  # noqa: F401  (the namespaced demo and server import)
from edgeasr.paths import package_data

repo = Path(sys.argv[1])
for module in ("edgeasr", "edgeasr.demo", "edgeasr.server"):
    origin = Path(sys.modules[module].__file__).resolve()
    assert not origin.is_relative_to(repo), f"{module} imported from the checkout: {origin}"
for package, pattern in (("edgeasr.recipes", "*.toml"), ("edgeasr.results", "*.jsonl")):
    folder = package_data(package)
    assert not folder.resolve().is_relative_to(repo) and any(folder.glob(pattern)), f"{package}: {folder}"
print("ok: edgeasr, edgeasr.demo, edgeasr.server, recipes and results from", Path(edgeasr.__file__).parent)
PY

echo "== edgeasr quantize --recipe $recipe"
"$work/venv/bin/edgeasr" quantize --recipe "$recipe" --out "$work/checkpoint" | tee "$work/quantize.log"
echo "== edgeasr export"
"$work/venv/bin/edgeasr" export --checkpoint "$work/checkpoint" --out "$work/bundle"
clip="$("$py" -c 'from edgeasr.data import build_dataset, load_manifest; build_dataset("moonshine-samples"); print(next(u.audio for u in load_manifest("moonshine-samples") if u.id.startswith("beckett")))')"
echo "== edgeasr-listen --bundle … --file $(basename "$clip")"
"$work/venv/bin/edgeasr-listen" --bundle "$work/bundle" --file "$clip" --fast --no-partials --json > "$work/listen.jsonl"
"$py" - "$work/listen.jsonl" <<'PY'
import json
import sys

events = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
text = " ".join(e["text"] for e in events if e["type"] == "LineCompleted").lower()
# The reference is "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."
assert all(words in text for words in ("ever tried", "no matter", "try again")), f"unexpected transcript: {text!r}"
print("ok: the wheel's edgeasr-listen transcribed beckett through the bundle:", text)
PY
