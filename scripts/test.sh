#!/usr/bin/env bash
# Sets up .venv, then lints (ruff, import contracts) and runs the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check raysweep analysis tests bench
.venv/bin/lint-imports    # the layers and the no-cycle rule of pyproject.toml's [tool.importlinter]
.venv/bin/python -m pytest -q "$@"
