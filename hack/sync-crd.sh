#!/usr/bin/env bash
# Refresh the copies of single-source files that the Helm chart and the kustomize
# overlay need inside their own directories (Helm packages only the chart directory;
# kustomize loads files only below the kustomization):
#
#   manifests/crd/detectionjob.dev_detectionjobs.yaml -> charts/detectionjob-operator/crds/
#   manifests/base/kopf.dev_peerings.yaml             -> charts/detectionjob-operator/crds/
#   examples/detectionjob.yaml                        -> manifests/overlays/example/
#
# and regenerates manifests/base/{serviceaccount,rbac,deployment,service}.yaml from the
# chart's default render (hack/render-base.sh; needs helm).
#
# `hack/sync-crd.sh --check` changes nothing and exits 1 if a copy or a generated file is
# stale (tests/install/test_crd_single_source.py and test_generated_manifests.py run it).
set -euo pipefail
cd "$(dirname "$0")/.."

pairs=(
  "manifests/crd/detectionjob.dev_detectionjobs.yaml charts/detectionjob-operator/crds/detectionjob.dev_detectionjobs.yaml"
  "manifests/base/kopf.dev_peerings.yaml charts/detectionjob-operator/crds/kopf.dev_peerings.yaml"
  "examples/detectionjob.yaml manifests/overlays/example/detectionjob.yaml"
)

check=0
[[ "${1:-}" == "--check" ]] && check=1
stale=0
for pair in "${pairs[@]}"; do
  read -r src dst <<<"$pair"
  if [[ ! -f "$src" ]]; then
    echo "missing source: $src" >&2
    stale=1
    continue
  fi
  if cmp -s "$src" "$dst"; then
    continue
  fi
  if (( check )); then
    echo "stale: $dst (source: $src)" >&2
    stale=1
  else
    cp "$src" "$dst"
    echo "updated $dst from $src"
  fi
done
render_args=()
(( check )) && render_args=(--check)
bash hack/render-base.sh "${render_args[@]}" || stale=1
exit "$stale"
