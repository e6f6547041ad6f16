#!/usr/bin/env bash
# Install everything (including the test extras and the emulation tools) and run the tests.
# Extra arguments go to pytest, e.g. bash scripts/test.sh -k boards
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/python -m pytest tests "$@"
