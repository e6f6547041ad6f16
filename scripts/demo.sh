#!/usr/bin/env bash
# The main job on a fresh machine: install, list the boards, check the machine, then
# `edgesdk flash --board rpi4 tests/data/digits_cnn.onnx`: convert the model, start the emulated
# Raspberry Pi 4 (arm64 Debian under qemu-user with real sshd), provision it offline, push,
# install atomically and smoke-test on ARM; then run it on the board and show `uname -m` over SSH.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
E=.venv/bin/edgesdk
MODEL=tests/data/digits_cnn.onnx
$E boards
$E doctor --board rpi4
$E flash --board rpi4 "$MODEL"
echo "uname -m on the emulated rpi4, over SSH:"
$E emulator exec rpi4 -- uname -m
$E status --board rpi4
# one inference on the board with the bundle's reference input; the outputs come back as .npy
REF=$(ls -d "${EDGESDK_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/edgesdk}"/bundles/rpi4-digits_cnn-*/reference/input_0.npy | head -1)
$E run --board rpi4 --input "$REF" -o results
