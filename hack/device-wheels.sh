#!/usr/bin/env bash
# Wheels for a GPU machine that has torch but no Ray and no network (the `device` machines lent to
# some sessions; Python 3.12 there): the Ray this machine has installed, trimmed to what the job uses
# (no RLlib, Tune, Train, Serve, LLM, Java, dashboard web build; binaries stripped) so that it fits
# what a call may carry, plus Ray's dependencies that machine lacks (jsonschema and its own).
#   bash hack/device-wheels.sh [DIR]      # default .devwhl (git-ignored)
# There, before benchmarks/gpu.sh:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .devwhl/*.whl
#   export PYTHONPATH=/tmp/site:$PWD
#   mkdir -p /tmp/bin && printf '#!/bin/sh\nexec python3 -m inference "$@"\n' >/tmp/bin/detectionjob
#   chmod +x /tmp/bin/detectionjob && export PATH=/tmp/bin:$PATH
# (benchmarks/gpu.sh then compiles bytecode first: those machines set PYTHONDONTWRITEBYTECODE=1.)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-.devwhl}"; PY="${DEVICE_PYTHON:-3.12}"
RAY=$(python3 -c "import ray; print(ray.__version__)")
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
python3 -m pip install -q wheel
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$work/dl" "ray==$RAY" jsonschema referencing rpds-py jsonschema-specifications
python3 -m wheel unpack -d "$work/un" "$work"/dl/ray-*.whl >/dev/null
root=$(echo "$work"/un/ray-*/ray)
rm -rf "$root"/{rllib,tune,train,serve,llm,jars,cpp} "$root/dashboard/client"
find "$root" -type d -name tests -prune -exec rm -rf {} +
for f in "$root/_raylet.so" "$root/core/src/ray/raylet/raylet" "$root/core/src/ray/gcs/gcs_server"; do
  strip --strip-unneeded "$f"
done
mkdir -p "$DIR"
rm -f "$DIR"/*.whl
python3 -m wheel pack -d "$DIR" "$(dirname "$root")" >/dev/null
cp "$work"/dl/{jsonschema,referencing,rpds_py}*.whl "$DIR"/
du -ch "$DIR"/*.whl | tail -1
