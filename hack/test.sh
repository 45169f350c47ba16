#!/usr/bin/env bash
# The test command (README, .ci/run): install with test extras, build and cache the control-plane
# binaries (kube-apiserver, etcd, kube-controller-manager, kubectl, kubelet, kube-scheduler,
# kube-proxy, KubeRay, helm, MinIO, CoreDNS), install the node's runtime (containerd, runc, CNI,
# docker.io, debootstrap: Debian packages), build our images, then run pytest twice: everything
# but the end-to-end tests, then the end-to-end tests (marker e2e: real Pods on the test node).
# Extra arguments go to both pytest runs, e.g. `bash hack/test.sh -x`.
# DETECTIONJOB_E2E=0 skips the node, the images and the e2e run (a machine without root/apt).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
e2e=${DETECTIONJOB_E2E:-1}
bash hack/install.sh --test
echo "== install: $(( $(date +%s) - start ))s"
images_pid=""
if [[ $e2e == 1 ]]; then
  # The images build (mostly downloads and disk) overlaps the Go builds (CPU).
  t=$(date +%s)
  bash hack/install-node.sh
  echo "== node packages: $(( $(date +%s) - t ))s"
  ( t=$(date +%s); bash hack/build-images.sh >/dev/null
    echo "== images: $(( $(date +%s) - t ))s" ) &
  images_pid=$!
fi
t=$(date +%s)
bash hack/build-binaries.sh
echo "== control-plane binaries: $(( $(date +%s) - t ))s"
if [[ -n $images_pid ]]; then
  t=$(date +%s)
  wait "$images_pid"
  echo "== waited for the images: $(( $(date +%s) - t ))s"
fi
ruff check .
t=$(date +%s)
set +e
python3 -m pytest -m "not e2e" "$@"
rc=$?
echo "== pytest (not e2e): $(( $(date +%s) - t ))s (exit $rc)"
rc_e2e=0
if [[ $e2e == 1 ]]; then
  t=$(date +%s)
  python3 -m pytest -m e2e "$@"
  rc_e2e=$?
  echo "== pytest (e2e): $(( $(date +%s) - t ))s (exit $rc_e2e)"
fi
set -e
echo "== total $(( $(date +%s) - start ))s"
# pytest's 5 ("no tests collected") is a failure too: any non-zero exit fails the run.
(( rc != 0 )) && exit $rc
exit $rc_e2e
