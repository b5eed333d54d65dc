#!/usr/bin/env bash
# Sets up .venv, then lints and runs the whole test suite (the command CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check raysweep analysis tests bench
.venv/bin/python -m pytest -q "$@"
