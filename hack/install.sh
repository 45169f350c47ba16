#!/usr/bin/env bash
# Install the project (editable) and its Python dependencies into the active python3.
# Usage: bash hack/install.sh [--test]   (--test adds pytest, hypothesis and ruff)
# torch/torchvision are pinned to the versions the test suite is run with; use a virtualenv
# first if you want the install kept apart from your system Python.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="job,operator"
[[ "${1:-}" == "--test" ]] && extras="$extras,test"
python3 -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" -e ".[${extras}]"
