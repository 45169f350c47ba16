#!/usr/bin/env bash
# Everything issue 12 measures on a GPU machine, in priority order, inside one time budget:
#   0. probe: where a detector's time goes, without Ray (benchmarks/gpu_probe.py)
#   1. fp32: bare loop vs the reference Ray Data example vs `detectionjob run` (GPU busy, memory);
#      fp32-job: the same without the reference; streams1/3/4: `detectionjob run --streams 1/3/4`;
#      default-batch: the job at the CLI's default batch size
#   2. bf16, then fp16: bare loop vs `detectionjob run`; big: the job alone on 2N images
#   3. the GPU code paths for real: staging buffer, --batch-size auto, a real out-of-memory,
#      channels_last and two streams against the default layout and one (CHECKS=layout: that only)
#   4. `detectionjob run --num-gpus 0.5 --workers 2` (two detectors on the GPU), bf16; and with
#      shards of 1024 images instead of 256 (fewer shard boundaries: parts, markers, a batch not read ahead)
#   5. fp16 and bf16 against fp32, per image (benchmarks/precision.py)
#   6. the bare loop's images/s by batch size (bf16)
#   7. `detectionjob run --batch-size auto` (fp32: with default-batch, what the GPU default should be)
# Needs the project importable (bash hack/install.sh), `detectionjob` on PATH and a CUDA GPU; on a
# machine with torch but no Ray, hack/device-wheels.sh makes the wheels to carry and says how.
#   OUT=gpu-results BUDGET=540 N=1024 BATCH=16 bash benchmarks/gpu.sh
#   STEPS=bf16,fp16,checks N=2048 bash benchmarks/gpu.sh     # some steps only
# Each step's Markdown/JSON goes to $OUT; a step starts only if the budget has room for it.
set -uo pipefail
cd "$(dirname "$0")/.."
N="${N:-1024}"; BATCH="${BATCH:-16}"; OUT="${OUT:-benchmarks/gpu-results}"; BUDGET="${BUDGET:-540}"
MODEL="${MODEL:-fasterrcnn_resnet50_fpn_v2}"; TRAIN_SECONDS="${TRAIN_SECONDS:-45}"
mkdir -p "$OUT"
START=$SECONDS
export PYTHONUNBUFFERED=1

# wanted NAME: the step is in $STEPS (or STEPS is unset/all)
wanted() { [[ ",${STEPS:-all}," == *",all,"* || ",${STEPS:-}," == *",$1,"* ]]; }

# step NAME MAX_SECONDS CMD...: run CMD with at most MAX_SECONDS (less if the budget is short).
step() {
  local name=$1 max=$2; shift 2
  wanted "${name%%-b[0-9]*}" || return 0
  local left=$(( BUDGET - (SECONDS - START) - 5 ))
  if (( left < 20 )); then echo "== $name: skipped, ${left}s of the budget left"; return; fi
  (( max > left )) && max=$left
  echo "== $name (at ${SECONDS}s, limit ${max}s): $*"
  local t0=$SECONDS
  timeout --kill-after=10 "$max" "$@" > >(tee "$OUT/$name.md") 2> "$OUT/$name.err"
  local rc=$?
  echo "== $name: rc=$rc in $(( SECONDS - t0 ))s"; tail -n 5 "$OUT/$name.err" | sed "s/^/   $name stderr: /"
}

# Bytecode, as an image built by pip has it: the lent GPU machines set PYTHONDONTWRITEBYTECODE=1 and
# their torch has no __pycache__, so every process compiled torch, torchvision and Ray from source
# (importing torch and torchvision took 5.6-8.9 s there, ~2 s with bytecode): the job's start-up
# measured that machine, not the product. Compiled once into $PYCACHE (PRECOMPILE=0: not).
if [[ "${PRECOMPILE:-1}" == 1 ]]; then
  unset PYTHONDONTWRITEBYTECODE; export PYTHONPYCACHEPREFIX="${PYCACHE:-/tmp/detectionjob-pycache}"
  t0=$SECONDS
  # the packages' folders found without importing them (importing torch uncompiled is what takes 5-9 s)
  python3 -m compileall -q -j 0 $(python3 -c "from importlib.util import find_spec
print(*(find_spec(m).submodule_search_locations[0] for m in ('torch', 'torchvision', 'ray', 'numpy', 'pyarrow')))") inference >/dev/null 2>&1
  echo "bytecode compiled into $PYTHONPYCACHEPREFIX in $(( SECONDS - t0 ))s"
fi

# ALLOW_CPU=1: a dry run of the script on a machine without a GPU (the checks step fails there)
python3 -c "import torch; assert torch.cuda.is_available() or '${ALLOW_CPU:-}', 'no CUDA GPU visible'; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu', torch.__version__)" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
python3 -c "import ray, torchvision, numpy, pyarrow; print('ray', ray.__version__, 'torchvision', torchvision.__version__, 'numpy', numpy.__version__, 'pyarrow', pyarrow.__version__)"
nproc; free -g | head -2
t0=$SECONDS; SIZES="$N"  # the images are made before the steps, outside their limits ('big': 2N as well)
wanted big && SIZES="$N, $(( 2 * N ))"
SMALL=$(python3 -c "import sys; sys.path.insert(0, 'benchmarks'); from throughput import images_dir
for n in ($SIZES,): images_dir(n)
print(images_dir(256))") || exit 1
echo "images ready in $(( SECONDS - t0 ))s"

T="python3 benchmarks/throughput.py --n $N --model $MODEL --batch-size $BATCH --no-bracket --memory-interval 5"
step probe 200 python3 benchmarks/gpu_probe.py --n 512 --model "$MODEL" --batch-size "$BATCH" --json "$OUT/probe.json"
# a step's limit: fixed seconds plus per 1000 images (H200, fp32: ~9 s bare, ~19 s reference, ~8 s ours)
per() { echo $(( $1 + N * $2 / 1000 )); }
step fp32 "$(per 80 50)" $T --json "$OUT/fp32.json"
step fp32-job "$(per 50 22)" $T --modes bare,detectionjob --json "$OUT/fp32-job.json"
step streams1 "$(per 30 12)" $T --modes detectionjob --job-streams 1 --json "$OUT/streams1.json"
step streams3 "$(per 30 12)" $T --modes detectionjob --job-streams 3 --json "$OUT/streams3.json"
step streams4 "$(per 30 12)" $T --modes detectionjob --job-streams 4 --json "$OUT/streams4.json"
# the job at the CLI's default batch size (RunConfig's), against $BATCH in the rows above
DEFAULT_BATCH=$(python3 -c "import dataclasses; from inference.options import RunConfig
print(next(f.default for f in dataclasses.fields(RunConfig) if f.name == 'batch_size'))") || exit 1
step default-batch "$(per 30 16)" $T --modes detectionjob --job-batch-size "$DEFAULT_BATCH" \
  --json "$OUT/default-batch.json"
step bf16 "$(per 50 20)" $T --modes bare,detectionjob --precision bf16 --json "$OUT/bf16.json"
step fp16 "$(per 50 20)" $T --modes bare,detectionjob --precision fp16 --json "$OUT/fp16.json"
# the job alone on twice the images (start-up spread over more): BIG_PRECISION, default fp16
step big "$(per 40 24)" $T --n $(( 2 * N )) --modes detectionjob --precision "${BIG_PRECISION:-fp16}" \
  --json "$OUT/big.json"
step shard "$(per 30 12)" $T --modes detectionjob --precision bf16 --job-shard-size 1024 --json "$OUT/shard.json"
step checks 90 python3 benchmarks/gpu_checks.py --model "$MODEL" --checks "${CHECKS:-staging,auto,oom,layout}" \
  --json "$OUT/checks.json"
step half-gpu 70 $T --modes detectionjob --precision bf16 --num-gpus 0.5 --job-workers 2 \
  --json "$OUT/half-gpu.json"
step precision 120 python3 benchmarks/precision.py --n 128 --model "$MODEL" --batch-size "$BATCH" \
  --train-seconds "$TRAIN_SECONDS" --json "$OUT/precision.json"
for b in 4 8 32 64; do
  step "sweep-b$b" 30 python3 benchmarks/bare_loop.py --images "$SMALL" \
    --model "$MODEL" --batch-size "$b" --precision bf16
done
step auto "$(per 40 12)" $T --modes detectionjob --job-batch-size auto --json "$OUT/auto.json"
echo "== done in $(( SECONDS - START ))s"
