#!/usr/bin/env bash
# Creates .venv (if missing) and installs raysweep with its test tools into it.
# PyTorch is installed first, as the CPU/GPU pair this project is tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=".venv/bin/python -m pip"
$pip install --quiet --upgrade pip
case "$(uname -m)" in
  aarch64|arm64) torch_pair="torch==2.9.1 torchvision==0.24.1" ;;
  *)             torch_pair="torch==2.14.1 torchvision==0.29.1" ;;
esac
# shellcheck disable=SC2086
.venv/bin/python -c "import torch, torchvision" 2>/dev/null || $pip install --quiet $torch_pair
$pip install --quiet -e ".[test]"
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch, ray, mlflow; print("torch", torch.__version__, "· ray", ray.__version__, "· mlflow", mlflow.__version__)'))"
