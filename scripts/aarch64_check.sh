#!/usr/bin/env bash
# Emulated aarch64 check: install the edge profile (no torch) into a Debian arm64 root and run
# `edgeasr-listen --bundle` under qemu-user as a Cortex-A76 (Raspberry Pi 5), comparing the final
# lines with the same bundles on this machine, and Smart Turn's end-of-turn scores likewise. A
# correctness check only: emulation is ~30x slower.
#
#   scripts/aarch64_check.sh [WORKDIR]      (needs: qemu-user-static debootstrap; root for debootstrap)
#
# WORKDIR (default: $EDGEASR_CACHE or ~/.cache/edgeasr, under aarch64-check/) keeps the arm64 root and
# the bundles between runs. Bundles are made here first if missing (W4 moonshine-tiny, W8 whisper-tiny.en).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-${EDGEASR_CACHE:-$HOME/.cache/edgeasr}/aarch64-check}"
ROOT="$WORK/root"
SITE="$ROOT/opt/site"
PY="${PYTHON:-python3}"
mkdir -p "$WORK"

for tool in qemu-aarch64-static debootstrap; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y qemu-user-static debootstrap" >&2; exit 2; }
done

# 1. A minimal Debian arm64 root with Python 3.11 (debootstrap's first stage only: no chroot needed,
#    the interpreter runs through qemu-user with -L pointing at the root).
if [ ! -x "$ROOT/usr/bin/python3.11" ]; then
  rm -rf "$ROOT"
  debootstrap --foreign --arch=arm64 --variant=minbase --include=python3,libpython3.11 bookworm "$ROOT"
  for deb in "$ROOT"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$ROOT"; done
fi

# 2. onnxruntime reads /proc/cpuinfo to pick kernels; the host's x86 one crashes it under qemu 7.2.
#    qemu's -L redirects the open to this ARM (Cortex-A76) description.
mkdir -p "$ROOT/proc"
cat > "$ROOT/proc/cpuinfo" <<'EOF'
processor	: 0
BogoMIPS	: 108.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x4
CPU part	: 0xd0b
CPU revision	: 1
EOF

# 3. The edge profile: the project wheel plus its base dependencies, as aarch64 wheels.
rm -rf "$WORK/wheel" "$SITE"
"$PY" -m pip wheel --no-deps --quiet -w "$WORK/wheel" "$REPO"
"$PY" -m pip install --quiet --target "$SITE" --python-version 3.11 --implementation cp --only-binary=:all: \
  --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 --platform manylinux_2_26_aarch64 \
  --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 "$WORK"/wheel/edgeasr-*.whl
if [ -d "$SITE/torch" ] || [ -d "$SITE/transformers" ]; then
  echo "FAIL: the edge profile pulled in torch or transformers" >&2; exit 1
fi
echo "edge profile installed size: $(du -sh "$SITE" | cut -f1) ($(du -sb "$SITE" | cut -f1) bytes)"

# 4. Bundles, made on this machine with the full install. The emulated Python runs with -P: the checkout is
#    the working directory, and its source tree must not shadow the installed edge profile.
declare -A BUNDLES=([moonshine-tiny]=4 [whisper-tiny.en]=8)
WAV="$("$PY" -c 'from edgeasr.registry import fetch_package, find_file
from edgeasr.zoo.catalog import MOONSHINE_VOICE
print(find_file(fetch_package(MOONSHINE_VOICE), "assets/beckett.wav"))')"
status=0
for model in "${!BUNDLES[@]}"; do
  bits="${BUNDLES[$model]}"
  bundle="$WORK/bundles/$model-rtn-w$bits"
  if [ ! -f "$bundle/bundle.json" ]; then
    checkpoint="$("$PY" -c "from edgeasr.quant.api import load_or_quantize; print(load_or_quantize('$model', 'rtn', $bits))")"
    "$PY" -m edgeasr.cli export --checkpoint "$checkpoint" --out "$bundle" >/dev/null
  fi
  listen=(--bundle "$bundle" --file "$WAV" --fast --no-partials --json)
  "$PY" -m edgeasr.listen "${listen[@]}" > "$WORK/$model.x86.jsonl"
  start=$(date +%s)
  PYTHONPATH=/opt/site qemu-aarch64-static -cpu cortex-a76 -L "$ROOT" "$ROOT/usr/bin/python3.11" -P \
    -c 'import sys; from edgeasr.listen import main; sys.exit(main())' "${listen[@]}" > "$WORK/$model.arm64.jsonl"
  seconds=$(( $(date +%s) - start ))
  # Same finals after Whisper's English normalizer (what WER compares) on both machines.
  "$PY" - "$WORK/$model.x86.jsonl" "$WORK/$model.arm64.jsonl" "$model W$bits" "$seconds" <<'EOF' || status=1
import json, sys
from edgeasr.metrics.wer import normalize

def finals(path):
    events = [json.loads(line) for line in open(path) if line.startswith("{")]
    return " ".join(e["text"] for e in events if e.get("type") == "LineCompleted")

x86, arm = finals(sys.argv[1]), finals(sys.argv[2])
same = normalize(x86) == normalize(arm) and x86.strip() != ""
print(f"{sys.argv[3]}: {'PASS' if same else 'FAIL'} (emulated run {sys.argv[4]} s)\n  x86:   {x86}\n  arm64: {arm}")
sys.exit(0 if same else 1)
EOF
done

# 5. End of turn: Smart Turn v3.2 (ONNX Runtime + numpy features, part of the edge profile) scores the same
#    audio on both machines. Its graph is int8-quantized, so scores may differ slightly: compare decisions.
TURN="$("$PY" -c 'from edgeasr.zoo.turn_assets import SMART_TURN, fetch_asset; print(fetch_asset(SMART_TURN))')"
SCORE='import sys
from edgeasr.audio import prepare_audio
from edgeasr.stream.turn import SmartTurn
audio = prepare_audio(sys.argv[2])
turn = SmartTurn(sys.argv[1])
print(" ".join(f"{turn.score(audio[:n]):.3f}" for n in (3 * 16000, 5 * 16000, audio.size)))'
x86="$("$PY" -c "$SCORE" "$TURN" "$WAV")"
arm="$(PYTHONPATH=/opt/site qemu-aarch64-static -cpu cortex-a76 -L "$ROOT" "$ROOT/usr/bin/python3.11" -P -c "$SCORE" "$TURN" "$WAV")"
"$PY" - "$x86" "$arm" <<'EOF' || status=1
import sys
x86, arm = ([float(v) for v in s.split()] for s in sys.argv[1:3])
same = len(x86) == len(arm) == 3 and all((a >= 0.5) == (b >= 0.5) and abs(a - b) < 0.15 for a, b in zip(x86, arm))
print(f"Smart Turn: {'PASS' if same else 'FAIL'} (P(turn complete) after 3 s, 5 s, all of beckett)\n  x86:   {x86}\n  arm64: {arm}")
sys.exit(0 if same else 1)
EOF
exit $status
