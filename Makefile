# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
# Both install everything they need first (system packages, the Python package with all extras,
# the rebuilt default model and the sample set), so nothing has to be set up by hand.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
APT_PACKAGES := libportaudio2 chromium flite festival festvox-us-slt-hts codec2-examples
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system-deps python-deps assets zoo demo test bench aarch64-check

system-deps:
	@if command -v apt-get >/dev/null; then \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	else echo "no apt-get: install $(APT_PACKAGES) with your package manager"; fi

python-deps:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[all]"

assets:
	edgeasr fetch moonshine-tiny
	edgeasr data build moonshine-samples

setup: system-deps python-deps assets

demo: setup
	edgeasr-demo

zoo: setup
	edgeasr fetch moonshine-base whisper-tiny.en whisper-base
	edgeasr data build asterisk-en asterisk-en-calib tts-en codec2-calib calib-mix

test: zoo
	$(PYTHON) -m pytest -q

# The edge profile under an emulated Raspberry Pi 5 (qemu-user + a Debian arm64 root): ~6 min.
aarch64-check: zoo
	@if command -v apt-get >/dev/null; then \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq qemu-user-static debootstrap >/dev/null; fi
	$(SUDO) scripts/aarch64_check.sh

STREAM_MODELS := $(foreach m,moonshine-tiny moonshine-base whisper-tiny.en,$(m) $(m)@rtn-w8 $(m)@rtn-w4)

# Timings first (they want an idle machine), then the study sweep stage by stage (resumable), then tables.
bench: zoo
	edgeasr bench runtime
	edgeasr bench kernels
	edgeasr bench stream --minutes 10 --out bench/results/stream-10min
	edgeasr bench stream --minutes 2 --out bench/results/stream-2min --models $(STREAM_MODELS)
	edgeasr bench server --soak-minutes 10
	for grid in bench/grids/stages/*.toml; do edgeasr sweep $$grid --results bench/results/full.jsonl || exit 1; done
	edgeasr bench quant --no-run
	edgeasr report bench/results/full.jsonl --out bench/results --readme README.md
