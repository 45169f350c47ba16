#!/usr/bin/env bash
# One command from a fresh checkout to Parquet results and annotated PNGs:
# installs the project, writes 8 VOC-sized sample images, runs the job on them.
#   WEIGHTS=auto (default): torchvision's pretrained COCO weights where they are cached or can be
#     downloaded (hack/demo-weights.py), else random, seeded weights - then the pipeline is real
#     and the boxes are meaningless, and one line says so. WEIGHTS=DEFAULT, none or
#     /path/to/state_dict.pth choose.
#   MODEL, N, OUT override the model, the number of sample images and the output folder.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/install.sh
N="${N:-8}"; OUT="${OUT:-results}"; WEIGHTS="${WEIGHTS:-auto}"
MODEL="${MODEL:-fasterrcnn_resnet50_fpn_v2}"
[[ "$WEIGHTS" == "auto" ]] && WEIGHTS=$(python3 hack/demo-weights.py "$MODEL")
detectionjob samples sample-images --n "$N" >/dev/null
threshold=0.5
[[ "$WEIGHTS" == "none" ]] && threshold=0.0  # a random model scores about 1/91 everywhere
detectionjob run --input sample-images --output "$OUT" --model "$MODEL" --weights "$WEIGHTS" \
  --score-threshold "$threshold" --samples 4
echo "results: $OUT/part-*.parquet, $OUT/_summary.json, annotated PNGs in $OUT/_samples/"
