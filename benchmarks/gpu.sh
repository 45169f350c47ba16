#!/usr/bin/env bash
# The three pipelines on a GPU machine (the goal is set on an H100): fasterrcnn_resnet50_fpn_v2,
# bare loop vs reference example vs detectionjob run, then detectionjob with bf16 autocast.
# Needs the project installed (bash hack/install.sh) and a CUDA GPU visible to torch.
#   N=1024 BATCH=16 bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-1024}"; BATCH="${BATCH:-16}"; OUT="${OUT:-benchmarks/gpu-results}"
mkdir -p "$OUT"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; print(torch.cuda.get_device_name(0))"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 benchmarks/throughput.py --n "$N" --model fasterrcnn_resnet50_fpn_v2 --batch-size "$BATCH" \
  --json "$OUT/fp32.json" | tee "$OUT/fp32.md"
python3 benchmarks/throughput.py --n "$N" --model fasterrcnn_resnet50_fpn_v2 --batch-size "$BATCH" \
  --modes bare,detectionjob --precision bf16 --json "$OUT/bf16.json" | tee "$OUT/bf16.md"
