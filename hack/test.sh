#!/usr/bin/env bash
# The test command (README, .ci/run): install with test extras, build and cache the control-plane
# binaries (kube-apiserver, etcd, kube-controller-manager, kubectl, kubelet, kube-scheduler,
# kube-proxy, KubeRay, helm, MinIO, CoreDNS), install the node's runtime (containerd, runc, CNI,
# docker.io, debootstrap: Debian packages), build our images, and run pytest three times, side by
# side: the end-to-end tests (marker e2e: real Pods on the test node; once images and binaries are
# built), the tests marked `waits` (once the binaries are built), and everything else. Extra arguments go to
# every pytest run, e.g. `bash hack/test.sh -x`.
# DETECTIONJOB_E2E=0 skips the node, the images and the e2e run (a machine without root/apt).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
e2e=${DETECTIONJOB_E2E:-1}
# If this script stops early, it stops the background runs: pytest turns SIGTERM into Ctrl-C
# (tests/conftest.py), so their fixtures tear everything down; build-images.sh cleans up on TERM.
e2e_pid="" e2e_log="" ready="" waits_pid="" waits_log=""
stop_background() {
  for pid in $e2e_pid $waits_pid; do
    kill -TERM "$pid" 2>/dev/null
    pkill -TERM -P "$pid" 2>/dev/null
  done
  for pid in $e2e_pid $waits_pid; do wait "$pid" 2>/dev/null; done
  for log in $e2e_log $waits_log; do [[ -f $log ]] && cat "$log"; done
  rm -f $e2e_log $ready $waits_log
}
trap stop_background EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
bash hack/install.sh --test
echo "== install: $(( $(date +%s) - start ))s"
if [[ $e2e == 1 ]]; then
  t=$(date +%s)
  bash hack/install-node.sh
  echo "== node packages: $(( $(date +%s) - t ))s"
  # In the background: the images build (mostly downloads and disk) overlaps the Go builds (CPU);
  # then, once the binaries are built ($ready appears), the e2e tests run beside the rest of the
  # suite: their Pods are held to the test node's CPU limits (about one core busy), so the other
  # tests use the other core. Their output is printed at the end.
  e2e_log=$(mktemp "${TMPDIR:-/tmp}/detectionjob-e2e.XXXXXX")
  ready=$e2e_log.ready
  ( set +e
    trap 'exit 143' TERM
    t=$(date +%s)
    bash hack/build-images.sh >/dev/null || { echo "== images: failed"; exit 1; }
    echo "== images: $(( $(date +%s) - t ))s"
    t=$(date +%s)
    until [[ -e $ready ]]; do sleep 1; done
    echo "== waited for the binaries: $(( $(date +%s) - t ))s"
    t=$(date +%s)
    python3 -m pytest -m e2e "$@"
    rc=$?
    echo "== pytest (e2e): $(( $(date +%s) - t ))s (exit $rc)"
    exit $rc ) >"$e2e_log" 2>&1 &
  e2e_pid=$!
fi
t=$(date +%s)
bash hack/build-binaries.sh
echo "== control-plane binaries: $(( $(date +%s) - t ))s"
ruff check .
[[ -z $e2e_pid ]] || touch "$ready"
# The tests marked `waits` (minutes of a job waiting on a stall bound or a slow store, little CPU)
# run in a pytest of their own from here on (some need MinIO, built above), beside the other runs;
# their output is printed at the end.
waits_log=$(mktemp "${TMPDIR:-/tmp}/detectionjob-waits.XXXXXX")
( set +e
  trap 'exit 143' TERM
  t=$(date +%s)
  python3 -m pytest -m "waits and not e2e" "$@"
  rc=$?
  echo "== pytest (waits): $(( $(date +%s) - t ))s (exit $rc)"
  exit $rc ) >"$waits_log" 2>&1 &
waits_pid=$!
t=$(date +%s)
set +e
python3 -m pytest -m "not e2e and not waits" "$@"
rc=$?
echo "== pytest (not e2e): $(( $(date +%s) - t ))s (exit $rc)"
rc_e2e=0
if [[ -n $e2e_pid ]]; then
  t=$(date +%s)
  wait "$e2e_pid"
  rc_e2e=$?
  echo "== waited for the e2e run: $(( $(date +%s) - t ))s; its output:"
  cat "$e2e_log"
  rm -f "$e2e_log" "$ready"
  e2e_pid="" e2e_log=""
fi
t=$(date +%s)
wait "$waits_pid"
rc_waits=$?
trap - EXIT
echo "== waited for the waits run: $(( $(date +%s) - t ))s; its output:"
cat "$waits_log"
rm -f "$waits_log"
set -e
echo "== total $(( $(date +%s) - start ))s"
# pytest's 5 ("no tests collected") is a failure too: any non-zero exit fails the run.
(( rc != 0 )) && exit $rc
(( rc_e2e != 0 )) && exit $rc_e2e
exit $rc_waits
