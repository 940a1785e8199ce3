#!/usr/bin/env bash
# `make lerobot-check`: qrobot's LeRobot adapter against lerobot 0.4.4 itself, in its own venv
# (.venv-lerobot): lerobot 0.4.4 pins torch<2.11, so it is installed without its dependencies
# beside the CPU torch 2.13 (pinned by a constraints file), with only the packages that
# importing `lerobot.robots` needs, at LeRobot's own version bounds. qrobot goes in with
# `--no-deps -e .` plus its runtime dependencies, less those that clash with LeRobot's pins.
# LeRobot's default video decoder, torchcodec (its CPU build), goes in beside them; it loads
# Debian's FFmpeg libraries. Then scripts/lerobot_check.py runs: the robot adapter, and a
# dataset that qrobot's own venv (.venv, `make setup`) collects and exports, loaded by
# LeRobot here (docs/robots/lerobot.md says what it proves); then a LeRobot ACT for that
# export, served by `qrobot serve-policy lerobot` from here and benchmarked from .venv
# through `remote` (scripts/lerobot_policy_check.py; docs/benchmarking.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-lerobot
STAMP=$VENV/.installed
PY=$VENV/bin/python

# importing lerobot.robots reaches lerobot.motors, lerobot.processor and lerobot.datasets:
LEROBOT_DEPS=(
    "draccus==0.10.0" "huggingface-hub>=0.34.2,<0.36" "pyserial>=3.5,<4" "deepdiff>=7.0.1,<9"
    "termcolor>=2.4,<4" "accelerate>=1.10,<2" "datasets>=4,<5" "av>=15,<16" "einops>=0.8,<0.9"
    # lerobot.policies (its factory) reaches diffusers and imageio; qrobot's serve-policy
    # imports transformers (qrobot.vla), here at LeRobot's bound (its transformers-dep extra)
    "diffusers>=0.27.2,<0.36" "imageio>=2.34,<3" "transformers>=4.57.1,<5"
)
# qrobot's own that LeRobot pins otherwise (huggingface-hub <0.36, rerun-sdk <0.27), with
# transformers 5 (it needs huggingface-hub 1.x); torch comes from the constraints file.
# eclipse-zenoh and msgspec (the remote policy's wire) are among those that do go in.
CLASH="torch huggingface-hub huggingface_hub rerun-sdk transformers"

quiet() {  # pip's notes about lerobot's unmet pins (deliberate: --no-deps) would bury real errors
    local rc=0
    "$@" > "$VENV/pip.log" 2>&1 || rc=$?
    grep -v -e "^WARNING: Location" -e "^lerobot 0.4.4 requires" -e "^qrobot 0.1.0 requires" -e "^ERROR: pip's dependency resolver" \
        "$VENV/pip.log" || true
    return "$rc"
}

if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ "$0" -nt "$STAMP" ]; then
    test -x "$PY" || "$PYTHON" -m venv "$VENV"
    echo "torch==2.13.0" > "$VENV/constraints.txt"
    PIP=(nice -n 10 "$PY" -m pip install --quiet -c "$VENV/constraints.txt")
    quiet "${PIP[@]}" torch==2.13.0
    quiet "${PIP[@]}" --no-deps lerobot==0.4.4
    # the one for torch 2.13 (0.28); --no-deps: its CUDA libraries are never loaded here
    quiet "${PIP[@]}" --no-deps "torchvision<0.29" pillow
    quiet "${PIP[@]}" "${LEROBOT_DEPS[@]}"
    # lerobot's own pin (<0.11) is for its torch; 0.13 is the CPU build for torch 2.13
    quiet "${PIP[@]}" --no-deps "torchcodec==0.13.0"
    quiet "${PIP[@]}" --no-deps -e .
    mapfile -t QROBOT_DEPS < <("$PY" - "$CLASH" <<'EOF'
import re, sys, tomllib
clash = set(sys.argv[1].split())
for dep in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
    if re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower() not in clash:
        print(dep)
EOF
    )
    quiet "${PIP[@]}" "${QROBOT_DEPS[@]}"
    "$PY" -c "import torch; assert torch.__version__ == '2.13.0+cpu', torch.__version__"
    touch "$STAMP"
fi
# torchcodec loads FFmpeg's shared libraries (libavcodec, ...): Debian's
if ! ldconfig -p | grep -q 'libavcodec\.so\.'; then
    apt-get install -y -q ffmpeg > /dev/null 2>&1 ||
        { apt-get update -q > /dev/null && apt-get install -y -q ffmpeg > /dev/null; }
fi

# a small dataset, collected and exported by qrobot in its own venv
QROBOT=${QROBOT:-.venv/bin/qrobot}
test -x "$QROBOT" || make setup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/lerobot-check-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
"$QROBOT" collect pick_place --episodes 2 --out "$WORK/source" -q
"$QROBOT" export lerobot "$WORK/source" "$WORK/export" --repo-id qrobot/pick_place

QROBOT="$QROBOT" HF_HUB_OFFLINE=1 HF_HOME="$WORK/hf" "$PY" scripts/lerobot_check.py "$WORK/source" "$WORK/export"
