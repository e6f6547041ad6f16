#!/usr/bin/env bash
# The main job on a fresh machine: install, list the boards, check the machine,
# start the emulated Raspberry Pi 4 (an arm64 Debian under qemu-user with real sshd)
# and run `uname -m` on it over SSH.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
E=.venv/bin/edgesdk
$E boards
$E doctor --board rpi4
$E emulator start rpi4
echo "uname -m on the emulated rpi4, over SSH:"
$E emulator exec rpi4 -- uname -m
