#!/usr/bin/env bash
# The test command (README, .ci/run): install with test extras, build and cache the control-plane
# binaries (kube-apiserver, etcd, kube-controller-manager, kubectl, KubeRay, helm, MinIO), run pytest.
# Extra arguments go to pytest, e.g. `bash hack/test.sh -m "not cluster"`.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash hack/install.sh --test
echo "== install: $(( $(date +%s) - start ))s"
t=$(date +%s)
bash hack/build-binaries.sh
echo "== control-plane binaries: $(( $(date +%s) - t ))s"
ruff check .
t=$(date +%s)
set +e
python3 -m pytest "$@"
rc=$?
set -e
echo "== pytest: $(( $(date +%s) - t ))s (exit $rc), total $(( $(date +%s) - start ))s"
# pytest's 5 ("no tests collected") is a failure too: any non-zero exit fails the run.
exit $rc
