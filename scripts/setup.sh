#!/usr/bin/env bash
# Install everything edgesdk needs on a fresh Debian/Ubuntu machine, idempotently:
#   system tools (qemu-user-static + binfmt_misc, debootstrap, OpenSSH, cmake),
#   the project venv .venv with edgesdk[host,test] (and the board package edgesdk-runtime, both editable)
#   pinned by constraints.txt.
# Usage: bash scripts/setup.sh            (host tools + edgesdk[host])
#        bash scripts/setup.sh --test     (also the test dependencies)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WANT_TEST=0
for a in "$@"; do
  case "$a" in
    --test) WANT_TEST=1 ;;
    *) echo "setup.sh: unknown option $a" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1;36m==>\033[0m %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "setup.sh: system packages need root (or sudo); emulated boards need root too" >&2; exit 1; fi
fi

APT_PKGS=(qemu-user-static binfmt-support debootstrap openssh-server openssh-client cmake python3-venv g++ g++-aarch64-linux-gnu g++-arm-linux-gnueabihf chromium)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# sshd in the host is only a binary we use (tests start their own); don't leave a system service running.
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
  say "mounting binfmt_misc"
  $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || true
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || [ ! -e /proc/sys/fs/binfmt_misc/qemu-arm ]; then
  say "registering qemu-user binfmt handlers"
  $SUDO update-binfmts --enable >/dev/null 2>&1 || $SUDO update-binfmts --enable qemu-aarch64 || true
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
EXTRAS="host"
[ "$WANT_TEST" = 1 ] && EXTRAS="host,test,torch"
say "installing edgesdk[$EXTRAS] into .venv (pinned by constraints.txt)"
"${PIP[@]}" install -c constraints.txt hatchling editables
# Both distributions of this repository, editable: the board package edgesdk-runtime (board/, edgesdk/runtime)
# and the host package that pins it (docs/architecture.md, "Packaging"). In one command, so that pip takes the
# local edgesdk-runtime instead of looking for it on an index.
"${PIP[@]}" install -c constraints.txt --no-build-isolation -e ./board -e ".[$EXTRAS]"
# The converters' isolated venvs (~/.cache/edgesdk/toolchains/<id>/venv), every toolchain record of provision
# kind venv: pnnx (ncnn), MNN, onnx2tf + TensorFlow (tflite, ~2.6 GB), OpenCV 4 (nnie), RKNN-Toolkit2 + torch
# (rknn, ~1.5 GB), vela. Idempotent: a venv that already satisfies its pinned requirements is left alone.
say "edgesdk toolchain install --all"
.venv/bin/edgesdk toolchain install --all
say "done: $("$ROOT/.venv/bin/edgesdk" --version)"
