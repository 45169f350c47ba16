#!/usr/bin/env bash
# Build (once) and cache the real programs the test suite runs: kube-apiserver,
# kube-controller-manager, kubectl, etcd and the node's kubelet, kube-scheduler and
# kube-proxy (one multi-call binary, hack/kube), the KubeRay operator with its CRDs,
# helm, MinIO, fake-gcs-server (a GCS emulator) and CoreDNS. See hack/README.md.
#
# Usage:
#   bash hack/build-binaries.sh          build what is missing, print NAME=PATH lines
#   bash hack/build-binaries.sh --check  build nothing; print NAME=PATH lines,
#                                        exit 1 if anything is missing
#
# Contract:
#   * Idempotent. Each component lives in
#       ${DETECTIONJOB_BIN_CACHE:-$HOME/.cache/detectionjob}/<component>-<version>/
#     and is skipped when that directory already exists. Builds go to a
#     temporary directory that is renamed into place only on success, so an
#     interrupted build is never mistaken for a cached one.
#   * Prints one NAME=PATH line per program on stdout (progress goes to
#     stderr). Exits non-zero on any failure.
#   * Every version is pinned below. Only the Go module proxy is needed.
set -euo pipefail

# ---- pinned versions -------------------------------------------------------
KUBE_VERSION=v1.37.2           # k8s.io/kubernetes; staging modules pinned in hack/kube/go.mod
KUBE_RELEASE_DATE=2026-10-27T12:01:04Z   # from proxy.golang.org/k8s.io/kubernetes/@v/v1.37.2.info
ETCD_VERSION=v3.7.0            # go.etcd.io/etcd/server/v3, as required by k8s.io/kubernetes v1.37.2
# KubeRay v1.7.0 is wanted, but proxy.golang.org answers "403 This module version
# is not available" for its zip (and @latest is v1.6.1), so v1.6.1 is pinned.
# The version is pinned in hack/kuberay/go.mod; this must match it.
KUBERAY_MODULE=github.com/ray-project/kuberay/ray-operator
KUBERAY_VERSION=v1.6.1
HELM_MODULE=helm.sh/helm/v3
HELM_VERSION=v3.22.0
MINIO_MODULE=github.com/minio/minio
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c   # MinIO has no semver tags; proxy @latest
COREDNS_MODULE=github.com/coredns/coredns
COREDNS_VERSION=v1.15.0        # the test node's cluster DNS (KubeRay reaches heads by Service name)
KUEUE_MODULE=sigs.k8s.io/kueue
KUEUE_VERSION=v0.17.0          # job queueing (tests/harness/kueue.py); CRDs + webhooks from the module
FAKE_GCS_MODULE=github.com/fsouza/fake-gcs-server
FAKE_GCS_VERSION=v1.56.1       # the GCS emulator (tests/harness/gcs.py)
GO_BIN_DIR=/usr/local/go/bin

CACHE=${DETECTIONJOB_BIN_CACHE:-$HOME/.cache/detectionjob}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODE=build
case "${1:-}" in
  "") ;;
  --check) MODE=check ;;
  -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
  *) echo "unknown argument: $1" >&2; exit 2 ;;
esac

export PATH="$PATH:$GO_BIN_DIR"
export GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -buildvcs=false" CGO_ENABLED=0
GOBUILD_FLAGS=(-trimpath "-ldflags=-s -w")

log() { echo "[build-binaries $(date +%T)] $*" >&2; }

# Version stamps, as Kubernetes' own build sets them (hack/lib/version.sh):
# without them every component reports v0.0.0-master+$Format:%H$, which
# kubectl version, helm and client libraries reject.
kube_ldflags() {
  local major minor pkg flags="-s -w"
  major=${KUBE_VERSION#v}; major=${major%%.*}
  minor=${KUBE_VERSION#v*.}; minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$KUBE_RELEASE_DATE"
  done
  echo "$flags"
}

# The wrapper module's sources and the link flags are part of the kube cache key, so editing
# hack/kube/* rebuilds it even at the same Kubernetes version.
kube_key() {
  local sum
  sum=$( (cat "$HERE/kube/go.mod" "$HERE/kube/go.sum" "$HERE"/kube/*.go; kube_ldflags) \
    | sha256sum | cut -c1-12)
  echo "kube-$KUBE_VERSION-$sum"
}
KUBE_DIR="$CACHE/$(kube_key)"
KUBERAY_DIR="$CACHE/kuberay-$KUBERAY_VERSION"
HELM_DIR="$CACHE/helm-$HELM_VERSION"
MINIO_DIR="$CACHE/minio-$MINIO_VERSION"
COREDNS_DIR="$CACHE/coredns-$COREDNS_VERSION"
KUEUE_DIR="$CACHE/kueue-$KUEUE_VERSION"
FAKE_GCS_DIR="$CACHE/fake-gcs-server-$FAKE_GCS_VERSION"

declare -A PROGRAMS=(
  [kube-apiserver]="$KUBE_DIR/kube-apiserver"
  [kube-controller-manager]="$KUBE_DIR/kube-controller-manager"
  [kubectl]="$KUBE_DIR/kubectl"
  [etcd]="$KUBE_DIR/etcd"
  [kubelet]="$KUBE_DIR/kubelet"
  [kube-scheduler]="$KUBE_DIR/kube-scheduler"
  [kube-proxy]="$KUBE_DIR/kube-proxy"
  [ray-operator]="$KUBERAY_DIR/ray-operator"
  [kuberay-crds]="$KUBERAY_DIR/crds"
  [kuberay-samples]="$KUBERAY_DIR/samples"
  [helm]="$HELM_DIR/helm"
  [minio]="$MINIO_DIR/minio"
  [coredns]="$COREDNS_DIR/coredns"
  [kueue]="$KUEUE_DIR/kueue"
  [kueue-crds]="$KUEUE_DIR/crds"
  [fake-gcs-server]="$FAKE_GCS_DIR/fake-gcs-server"
)
ORDER=(kube-apiserver kube-controller-manager kubectl etcd kubelet kube-scheduler kube-proxy
       ray-operator kuberay-crds kuberay-samples helm minio coredns kueue kueue-crds fake-gcs-server)

print_paths() {
  local missing=0 name
  for name in "${ORDER[@]}"; do
    echo "$name=${PROGRAMS[$name]}"
    [[ -e "${PROGRAMS[$name]}" ]] || { log "missing: $name (${PROGRAMS[$name]})"; missing=1; }
  done
  return $missing
}

if [[ $MODE == check ]]; then
  print_paths
  exit $?
fi

grep -q "$KUBERAY_MODULE $KUBERAY_VERSION" "$HERE/kuberay/go.mod" \
  || { log "hack/kuberay/go.mod does not pin $KUBERAY_MODULE $KUBERAY_VERSION"; exit 1; }
command -v go >/dev/null || { log "no Go toolchain (looked in PATH and $GO_BIN_DIR)"; exit 1; }
mkdir -p "$CACHE"

# run_cached DIR FUNCTION: run FUNCTION with $OUT set to a fresh temp dir next
# to DIR, then rename it to DIR. Skips when DIR exists.
run_cached() {
  local dir=$1 fn=$2 start
  if [[ -d $dir ]]; then
    log "cached: $dir"
    return 0
  fi
  OUT=$(mktemp -d "$dir.tmp.XXXXXX")
  trap 'rm -rf "$OUT"' EXIT
  start=$SECONDS
  log "building $(basename "$dir") ..."
  "$fn"
  if ! mv -T "$OUT" "$dir" 2>/dev/null; then
    # Another run of this script finished the same component first: keep its copy.
    [[ -d $dir ]] || { log "cannot move $OUT to $dir"; exit 1; }
    rm -rf "$OUT"
  fi
  trap - EXIT
  log "built $(basename "$dir") in $((SECONDS - start)) s ($(du -sh "$dir" | cut -f1))"
  prune_older "$dir"
}

# prune_older DIR: a new version of a component replaces the older ones in the cache
# (kube-v1.37.2-<key> replaces kube-v*, never kuberay-v*). In-progress *.tmp.* builds are
# left alone. DETECTIONJOB_KEEP_OLD_BINARIES=1 keeps them (checkouts at different versions
# sharing one cache).
prune_older() {
  local dir=$1 component old
  [[ ${DETECTIONJOB_KEEP_OLD_BINARIES:-0} == 1 ]] && return 0
  component=$(basename "$dir"); component=${component%%-v*}
  for old in "$CACHE/$component"-v*; do
    [[ -d $old && $old != "$dir" && $old != *.tmp.* ]] || continue
    log "pruning $(basename "$old") (replaced by $(basename "$dir"))"
    rm -rf "$old"
  done
}

build_kube() {
  (cd "$HERE/kube" && nice -n 10 go build -mod=readonly -trimpath "-ldflags=$(kube_ldflags)" \
      -o "$OUT/kube" .)
  local n
  for n in kube-apiserver kube-controller-manager kubectl etcd kubelet kube-scheduler kube-proxy; do
    ln -s kube "$OUT/$n"
  done
  "$OUT/kube-apiserver" --version >&2
  echo "etcd $ETCD_VERSION (go.etcd.io/etcd/server/v3/embed, linked into the same binary)" >&2
}

build_kuberay() {
  # Built as a `tool` of the wrapper module hack/kuberay (go.mod pins the
  # version, go.sum is committed): `go install ...@version` fails because the
  # proxy refuses this module's @v/list, which go install reads.
  (cd "$HERE/kuberay" && nice -n 10 go build -mod=readonly "${GOBUILD_FLAGS[@]}" \
      -o "$OUT/ray-operator" "$KUBERAY_MODULE")
  # CRDs from the very same module version, so operator and CRDs always match.
  local moddir
  moddir=$(cd "$HERE/kuberay" && go list -mod=readonly -m -f '{{.Dir}}' "$KUBERAY_MODULE")
  [[ -d $moddir/config/crd/bases ]] || { log "no CRDs in '$moddir'"; return 1; }
  mkdir -p "$OUT/crds" "$OUT/samples"
  cp "$moddir"/config/crd/bases/*.yaml "$OUT/crds/"
  # KubeRay's own sample manifests (the control-plane tests apply one).
  cp "$moddir"/config/samples/*.yaml "$OUT/samples/"
  chmod -R u+w "$OUT/crds" "$OUT/samples"
}

build_helm() {
  GOBIN="$OUT" nice -n 10 go install "${GOBUILD_FLAGS[@]}" "$HELM_MODULE/cmd/helm@$HELM_VERSION"
}

build_minio() {
  GOBIN="$OUT" nice -n 10 go install "${GOBUILD_FLAGS[@]}" "$MINIO_MODULE@$MINIO_VERSION"
}

build_fake_gcs() {
  GOBIN="$OUT" nice -n 10 go install "${GOBUILD_FLAGS[@]}" "$FAKE_GCS_MODULE@$FAKE_GCS_VERSION"
}

build_coredns() {
  GOBIN="$OUT" nice -n 10 go install "${GOBUILD_FLAGS[@]}" "$COREDNS_MODULE@$COREDNS_VERSION"
}

build_kueue() {
  GOBIN="$OUT" nice -n 10 go install -trimpath \
    "-ldflags=-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" \
    "$KUEUE_MODULE/cmd/kueue@$KUEUE_VERSION"
  # CRDs and webhook configurations from the very same module version (now in the module cache).
  local moddir
  moddir=$(go mod download -json "$KUEUE_MODULE@$KUEUE_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -d $moddir/config/components/crd/bases ]] || { log "no Kueue CRDs in '$moddir'"; return 1; }
  mkdir -p "$OUT/crds"
  cp "$moddir"/config/components/crd/bases/*.yaml "$OUT/crds/"
  cp "$moddir/config/components/webhook/manifests.yaml" "$OUT/webhook-manifests.yaml"
  chmod -R u+w "$OUT/crds" "$OUT/webhook-manifests.yaml"
}

total=$SECONDS
run_cached "$KUBE_DIR" build_kube
run_cached "$KUBERAY_DIR" build_kuberay
run_cached "$HELM_DIR" build_helm
run_cached "$MINIO_DIR" build_minio
run_cached "$COREDNS_DIR" build_coredns
run_cached "$KUEUE_DIR" build_kueue
run_cached "$FAKE_GCS_DIR" build_fake_gcs
log "done in $((SECONDS - total)) s; cache $CACHE is $(du -sh "$CACHE" | cut -f1)"
print_paths
