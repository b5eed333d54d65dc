#!/usr/bin/env bash
# Sets up .venv, then runs the offline quickstart sweep (≈15 minutes on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/raysweep plan search_spaces/quickstart.yaml
.venv/bin/raysweep launch search_spaces/quickstart.yaml "$@"
