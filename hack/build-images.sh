#!/usr/bin/env bash
# Build (once) and cache the two container images, detectionjob-worker and
# detectionjob-operator, from the project's own Dockerfile.worker and Dockerfile.operator,
# on local Debian bases made with debootstrap (no image registry can be reached here), and
# export each as a `docker save` tar for import into the test node's containerd. See the
# "Images" section of hack/README.md.
#
# Usage (as root: debootstrap, chroot, mount and dockerd need it):
#   bash hack/build-images.sh                  build what is missing; print the lines below
#   bash hack/build-images.sh --check          build nothing; print the lines below,
#                                              exit 1 if an image tar is missing
#   bash hack/build-images.sh --with-dockerd CMD [ARG...]
#                                              start the private dockerd, print
#                                              DOCKER_HOST=unix://<cache>/docker.sock, run CMD
#                                              with DOCKER_HOST exported, stop dockerd, exit
#                                              with CMD's status (the tests run the images so)
#
# Contract:
#   * stdout is exactly four lines (progress and timings go to stderr):
#       WORKER=detectionjob-worker:<key>
#       WORKER_TAR=<cache>/detectionjob-worker-<key>.tar
#       OPERATOR=detectionjob-operator:<key>
#       OPERATOR_TAR=<cache>/detectionjob-operator-<key>.tar
#     Each tar also carries the stable tag detectionjob.local/detectionjob-<name>:test.
#   * The cache is ${DETECTIONJOB_IMAGE_CACHE:-$HOME/.cache/detectionjob/images}: the private
#     dockerd's data (docker/), the tars, a pip wheelhouse (wheelhouse/) and logs (logs/).
#     <key> hashes the Dockerfile, .dockerignore, pyproject.toml, README.md, inference/,
#     operator/, the base image's key and the image-building part of this script; a base's key
#     hashes its package lists, the pinned versions, the base-making part of this script and
#     the host's extra CA certificates.
#     A tar that exists is complete (written to a temporary name, renamed on success) and is
#     reused: when both exist, nothing is started at all. A new key replaces the older tars
#     and images of the same name (DETECTIONJOB_KEEP_OLD_IMAGES=1 keeps them).
#   * Idempotent; one run at a time per cache (flock). Exits non-zero on any failure. Leaves no
#     process (dockerd and its containerd are stopped by pid, also on failure), no mount and no
#     iptables change behind: dockerd runs with --iptables=false --bridge=none in a private mount
#     namespace whose /run is an empty tmpfs, so it starts its own containerd and never a
#     /run/containerd/containerd.sock of another containerd.
set -euo pipefail

# ---- pinned versions and inputs ---------------------------------------------
DEBIAN_SUITE=bookworm                  # python3 = 3.11, as python:3.11-slim and the Ray py311 image
# Debian packages of both local bases (the operator's stands in for python:3.11-slim) ...
BASE_PACKAGES=(python3 python3-venv python-is-python3 ca-certificates netbase)
# ... and added to the worker's (it stands in for rayproject/ray, which has both; KubeRay's
# probes and `ray` tooling expect a usual userland).
WORKER_PACKAGES=(wget procps)
# torch/torchvision: the versions the test suite runs with (= hack/install.sh; a test checks).
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
DOCKER=/usr/bin/docker                 # Debian's docker.io 20.10 (legacy builder), not /usr/local/bin
DOCKERD=/usr/sbin/dockerd
# The tools dockerd runs (containerd, runc, docker-init) come from Debian's packages only.
DOCKERD_PATH=/usr/sbin:/usr/bin:/sbin:/bin

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
CACHE=${DETECTIONJOB_IMAGE_CACHE:-$HOME/.cache/detectionjob/images}
EXTRA_CA_DIR=/usr/local/share/ca-certificates

# Ray: pinned in one place, Dockerfile.worker's `ARG RAY_VERSION=` (the release image's tag).
RAY_VERSION=$(sed -n 's/^ARG RAY_VERSION=\([0-9][0-9.]*\)[[:space:]]*$/\1/p' "$REPO/Dockerfile.worker")
[[ -n $RAY_VERSION ]] || { echo "no 'ARG RAY_VERSION=x.y.z' in Dockerfile.worker" >&2; exit 1; }
# ray[default] as in the official image: the dashboard, whose agent answers KubeRay's probes
# (:52365/api/healthz), and the job server that KubeRay's submitter talks to (:8265).
WORKER_PIP=("ray[default,data]==$RAY_VERSION" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION")

MODE=build
case "${1:-}" in
  "") ;;
  --check) MODE=check ;;
  --with-dockerd)
    MODE=with-dockerd; shift
    [[ $# -gt 0 ]] || { echo "--with-dockerd needs a command" >&2; exit 2; } ;;
  -h|--help) sed -n '2,38p' "$SELF"; exit 0 ;;
  *) echo "unknown argument: $1" >&2; exit 2 ;;
esac

log() { echo "[build-images $(date +%T)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---- cache keys ---------------------------------------------------------------
sha() { sha256sum | cut -c1-12; }

# The part of this script that makes the bases (from its "local Debian bases" heading to its
# "images" heading): editing anything else (logging, caching, the app builds) keeps the bases.
base_recipe() {
  sed -n '/^# ---- the local Debian bases/,/^# ---- the images/p' "$SELF"
}
base_inputs() {
  printf '%s\n' "suite=$DEBIAN_SUITE" "packages=${BASE_PACKAGES[*]}"
  base_recipe
  local f
  for f in "$EXTRA_CA_DIR"/*.crt; do
    [[ -f $f ]] || continue
    cat "$f"
  done
}
[[ $(base_recipe | wc -l) -gt 50 ]] || { echo "cannot find the bases' recipe in $SELF" >&2; exit 1; }
OPERATOR_BASE_KEY=$(base_inputs | sha)
WORKER_BASE_KEY=$( (base_inputs; printf '%s\n' "worker-packages=${WORKER_PACKAGES[*]}" \
                     "pip=${WORKER_PIP[*]}") | sha)
OPERATOR_BASE=detectionjob.local/base-operator:$OPERATOR_BASE_KEY
WORKER_BASE=detectionjob.local/base-worker:$WORKER_BASE_KEY

# app_key DOCKERFILE BASE_KEY: everything `docker build` sees (the .dockerignore'd context),
# the base and how this script builds and saves the images (its last part).
app_key() {
  local dockerfile=$1 base_key=$2
  (
    cd "$REPO"
    echo "base=$base_key"
    sed -n '/^# ---- the images/,$p' "$SELF"
    sha256sum "$dockerfile" .dockerignore pyproject.toml README.md
    # -L: operator/ links to the CRD under manifests/crd (in the context, see .dockerignore).
    find -L inference operator -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum
  ) | sha
}
WORKER_KEY=$(app_key Dockerfile.worker "$WORKER_BASE_KEY")
OPERATOR_KEY=$(app_key Dockerfile.operator "$OPERATOR_BASE_KEY")
WORKER_REF=detectionjob-worker:$WORKER_KEY
OPERATOR_REF=detectionjob-operator:$OPERATOR_KEY
WORKER_TAR=$CACHE/detectionjob-worker-$WORKER_KEY.tar
OPERATOR_TAR=$CACHE/detectionjob-operator-$OPERATOR_KEY.tar

print_refs() {
  local missing=0 tar
  echo "WORKER=$WORKER_REF"
  echo "WORKER_TAR=$WORKER_TAR"
  echo "OPERATOR=$OPERATOR_REF"
  echo "OPERATOR_TAR=$OPERATOR_TAR"
  for tar in "$WORKER_TAR" "$OPERATOR_TAR"; do
    [[ -f $tar ]] || { log "missing: $tar"; missing=1; }
  done
  return $missing
}

if [[ $MODE == check ]]; then
  print_refs
  exit $?
fi
if [[ $MODE == build && -f $WORKER_TAR && -f $OPERATOR_TAR ]]; then
  log "cached: $(basename "$WORKER_TAR") $(basename "$OPERATOR_TAR")"
  print_refs
  exit 0
fi

# ---- from here on: root, one run at a time ---------------------------------------
[[ $EUID -eq 0 ]] || die "run as root (debootstrap, chroot, mount and dockerd need it)"
for tool in "$DOCKER" "$DOCKERD" /usr/sbin/debootstrap /usr/sbin/chroot unshare flock; do
  command -v "$tool" >/dev/null || die "missing $tool (bash hack/install-node.sh installs it)"
done
mkdir -p "$CACHE/logs" "$CACHE/wheelhouse"
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
  log "waiting for another build-images.sh run on $CACHE ..."
  flock 9
fi

export DOCKER_HOST="unix://$CACHE/docker.sock"
export DOCKER_BUILDKIT=0 DOCKER_CLI_HINTS=false
EXEC_ROOT=$CACHE/run
DOCKERD_PID=""
WORK=""
RM_PID=""
MOUNTS=()
declare -a TIMINGS=()

# ---- cleanup: mounts, dockerd (by pid), temporary files; also on failure ---------
cleanup() {
  local rc=$? i
  set +e
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount -n "${MOUNTS[i]}" 2>/dev/null || umount -n -l "${MOUNTS[i]}" \
      || log "could not unmount ${MOUNTS[i]}"
  done
  MOUNTS=()
  stop_dockerd
  [[ -n $WORK ]] && remove_work "$WORK"
  if [[ -n $RM_PID ]]; then
    log "waiting for the removal of the work directory"
    wait "$RM_PID"
  fi
  rm -f "$CACHE"/.*.tar.tmp.* 2>/dev/null
  return "$rc"
}

# mounts_under DIR: mount points at or below DIR, deepest first.
mounts_under() {
  awk -v dir="$1" '$5 == dir || index($5, dir "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

# remove_work DIR: a work directory (the chroot), never through a mount still inside it (the
# wheelhouse bind mount is on the same filesystem: rm --one-file-system would go through it).
remove_work() {
  local dir=$1 m
  [[ -d $dir ]] || return 0
  while read -r m; do
    umount -n "$m" 2>/dev/null || umount -n -l "$m"
  done < <(mounts_under "$dir")
  if [[ -n $(mounts_under "$dir") ]]; then
    log "not removing $dir: still mounted: $(mounts_under "$dir" | xargs)"
    return 1
  fi
  rm -rf --one-file-system "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# A killed run's chroot (with its mounts): this run holds the lock, so it is no one's now.
for stale in "$CACHE"/.work.*; do
  [[ -d $stale ]] || continue
  log "removing $stale (left by an interrupted run)"
  remove_work "$stale"
done

# pids of processes whose command line names our exec root: the containerd dockerd started
# and its shims (after a normal stop there are none).
own_pids() {
  local p cmd
  for p in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    [[ $cmd == *"$EXEC_ROOT/"* ]] && echo "${p#/proc/}"
  done
  return 0
}

stop_dockerd() {
  [[ -n $DOCKERD_PID ]] || return 0
  local i pid
  if kill -0 "$DOCKERD_PID" 2>/dev/null; then
    kill -TERM "$DOCKERD_PID" 2>/dev/null
    for ((i = 0; i < 120; i++)); do
      kill -0 "$DOCKERD_PID" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then
      log "dockerd ($DOCKERD_PID) did not stop in 60 s: killing it"
      kill -KILL "$DOCKERD_PID" 2>/dev/null
    fi
  fi
  wait "$DOCKERD_PID" 2>/dev/null
  for pid in $(own_pids); do
    log "killing leftover process $pid ($(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | cut -c1-80))"
    kill -KILL "$pid" 2>/dev/null
  done
  log "dockerd stopped"
  DOCKERD_PID=""
}

start_dockerd() {
  local i log_file=$CACHE/logs/dockerd.log
  [[ -S $CACHE/docker.sock ]] && rm -f "$CACHE/docker.sock"   # a killed run's stale socket
  [[ -z $(own_pids) ]] || die "processes of an earlier dockerd still run: $(own_pids | xargs)"
  mkdir -p "$CACHE/docker" "$EXEC_ROOT"
  log "starting dockerd (data-root $CACHE/docker, log $log_file)"
  # A private mount namespace with an empty tmpfs on /run: dockerd finds no
  # /run/containerd/containerd.sock, so it starts and manages its own containerd (socket in
  # --exec-root); the containerd shims' sockets (/run/containerd/s/...) stay in that tmpfs,
  # and everything mounted for builds disappears with the namespace.
  # --oom-score-adjust=0: this machine cannot lower oom_score_adj (no CAP_SYS_RESOURCE).
  env PATH="$DOCKERD_PATH" unshare --mount --propagation private -- \
    /bin/bash -c 'mount -n -t tmpfs -o mode=0755,size=64m detectionjob-run /run && exec "$@"' bash \
    "$DOCKERD" \
      --data-root "$CACHE/docker" \
      --exec-root "$EXEC_ROOT" \
      --pidfile "$EXEC_ROOT/dockerd.pid" \
      -H "$DOCKER_HOST" \
      --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false --bridge=none \
      --userland-proxy=false --mtu 1400 --oom-score-adjust=0 \
      --storage-driver overlay2 --log-driver json-file \
      </dev/null >"$log_file" 2>&1 &
  DOCKERD_PID=$!
  for ((i = 0; i < 120; i++)); do
    "$DOCKER" version >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -n 30 "$log_file" >&2; DOCKERD_PID=""; die "dockerd exited"; }
    sleep 0.5
  done
  "$DOCKER" version >/dev/null 2>&1 || { tail -n 30 "$log_file" >&2; die "dockerd did not answer in 60 s"; }
  log "dockerd ready (pid $DOCKERD_PID)"
}

# timed NAME CMD...: run CMD, log and remember its wall time.
timed() {
  local name=$1 start=$SECONDS
  shift
  "$@"
  TIMINGS+=("$name: $((SECONDS - start)) s")
  log "$name took $((SECONDS - start)) s"
}

image_exists() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

if [[ $MODE == with-dockerd ]]; then
  start_dockerd
  echo "DOCKER_HOST=$DOCKER_HOST"
  rc=0
  "$@" || rc=$?
  exit "$rc"
fi

# ---- the local Debian bases ---------------------------------------------------------
debian_mirror() {
  if [[ -n ${DETECTIONJOB_DEBIAN_MIRROR:-} ]]; then
    echo "$DETECTIONJOB_DEBIAN_MIRROR"
    return 0
  fi
  local f
  {
    for f in /etc/apt/sources.list.d/*.sources; do
      [[ -f $f ]] || continue
      awk '$1 == "URIs:" { for (i = 2; i <= NF; i++) print $i }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [[ -f $f ]] || continue
      awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; break } }' "$f"
    done
  } | { grep -E '/debian/?$' || true; } | head -n 1
}

# in_root CMD...: run CMD in the chroot with a clean environment.
in_root() {
  chroot "$ROOTFS" /usr/bin/env -i \
    PATH=/home/ray/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=180 PIP_NO_CACHE_DIR=1 PIP_PROGRESS_BAR=off \
    "$@"
}

# mount_in_root TARGET MOUNT-ARGS...: mount and remember it (the EXIT trap unmounts). -n: no
# libmount bookkeeping under the host's /run/mount.
mount_in_root() {
  local target=$1
  shift
  mkdir -p "$target"
  mount -n "$@" "$target"
  MOUNTS+=("$target")
}

umount_all() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount -n "${MOUNTS[i]}"
  done
  MOUNTS=()
}

# import_rootfs REF KIND CHANGE...: `docker import` the rootfs as one layer.
import_rootfs() {
  local ref=$1 kind=$2 change
  shift 2
  local args=(--change "LABEL dev.detectionjob.base=$kind")
  for change in "$@"; do
    args+=(--change "$change")
  done
  tar --numeric-owner --one-file-system -C "$ROOTFS" \
      --exclude='./proc/*' --exclude='./sys/*' --exclude='./var/lib/apt/lists/*' \
      --exclude='./var/cache/apt/*' --exclude='./wheelhouse' -c . \
    | "$DOCKER" import "${args[@]}" - "$ref" >/dev/null
  log "imported $ref ($("$DOCKER" image inspect -f '{{.Size}}' "$ref" | numfmt --to=iec))"
}

COMMON_ENV=(
  "ENV LANG=C.UTF-8"
  # Test bases: the host's HTTPS egress is re-signed by its own CAs (added to this bundle).
  "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt"
  "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
)

debootstrap_rootfs() {
  local mirror
  mirror=$(debian_mirror)
  [[ -n $mirror ]] || die "no Debian mirror in /etc/apt/sources.list*; set DETECTIONJOB_DEBIAN_MIRROR"
  log "debootstrap $DEBIAN_SUITE from $mirror (log $CACHE/logs/debootstrap.log)"
  local packages
  packages=$(IFS=,; echo "${BASE_PACKAGES[*]}")
  # In a private mount namespace (with an empty /run, for libmount's bookkeeping): the proc and
  # sys mounts debootstrap makes in the target never show on the host, even if it is killed.
  if ! unshare --mount --propagation private -- \
      /bin/bash -c 'mount -n -t tmpfs -o mode=0755,size=16m detectionjob-run /run && exec "$@"' bash \
      /usr/sbin/debootstrap --variant=minbase --include="$packages" \
      "$DEBIAN_SUITE" "$ROOTFS" "$mirror" >"$CACHE/logs/debootstrap.log" 2>&1; then
    tail -n 30 "$CACHE/logs/debootstrap.log" >&2
    die "debootstrap failed"
  fi
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb
  # The host's extra CAs (HTTPS egress is re-signed by them), into the chroot's bundle.
  local f
  for f in "$EXTRA_CA_DIR"/*.crt; do
    [[ -f $f ]] || continue
    cp "$f" "$ROOTFS/usr/local/share/ca-certificates/"
  done
  in_root update-ca-certificates >"$CACHE/logs/update-ca-certificates.log" 2>&1
  : >"$ROOTFS/etc/resolv.conf"   # the container runtime provides it
}

build_operator_base() {
  import_rootfs "$OPERATOR_BASE" operator "${COMMON_ENV[@]}" \
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    'CMD ["python3"]'
}

# The stand-in for rayproject/ray:<version>-py311-gpu: user ray (1000, group users = 100)
# with home /home/ray, a venv owned by ray first on PATH (the Ray image's conda python), with
# ray[default,data], torch and torchvision installed from a wheelhouse in the cache (pip's own HTTP
# cache stays empty here: the egress proxy's responses carry no caching headers).
worker_pip() {
  cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
  mount_in_root "$ROOTFS/proc" -t proc proc
  mount_in_root "$ROOTFS/wheelhouse" --bind "$CACHE/wheelhouse"
  # Downloads only what the wheelhouse lacks ("File was already downloaded").
  in_root pip download --quiet --dest /wheelhouse "${WORKER_PIP[@]}" >&2
  in_root pip install --quiet --no-index --find-links /wheelhouse "${WORKER_PIP[@]}" >&2
  in_root python -c 'import ray, torch, torchvision; print("ray", ray.__version__, "torch", torch.__version__)' >&2
  umount_all
  rmdir "$ROOTFS/wheelhouse"
  : >"$ROOTFS/etc/resolv.conf"
}

build_worker_base() {
  cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
  mount_in_root "$ROOTFS/proc" -t proc proc
  # No maintainer script may start a service (procps' would apply sysctls to the host).
  printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
  chmod 0755 "$ROOTFS/usr/sbin/policy-rc.d"
  in_root apt-get install --yes --no-install-recommends -q "${WORKER_PACKAGES[@]}" \
    >"$CACHE/logs/worker-base.apt.log" 2>&1 \
    || { tail -n 30 "$CACHE/logs/worker-base.apt.log" >&2; die "apt-get install ${WORKER_PACKAGES[*]} failed"; }
  in_root apt-get clean
  rm -f "$ROOTFS/usr/sbin/policy-rc.d"
  umount_all
  in_root useradd --uid 1000 --gid 100 --create-home --home-dir /home/ray --shell /bin/bash ray
  in_root python3 -m venv /home/ray/venv
  timed "worker base: pip (ray, torch, torchvision)" worker_pip
  chown -R 1000:100 "$ROOTFS/home/ray"
  rm -rf "$ROOTFS/root/.cache"
  timed "worker base: docker import" import_rootfs "$WORKER_BASE" worker "${COMMON_ENV[@]}" \
    "ENV PATH=/home/ray/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "ENV HOME=/home/ray" \
    "USER 1000:100" \
    "WORKDIR /home/ray" \
    'CMD ["/bin/bash"]'
}

build_bases() {
  local need_operator=0 need_worker=0
  # Only what an image to build needs (a cached tar needs no base).
  image_exists "$OPERATOR_BASE" || [[ -f $OPERATOR_TAR ]] || need_operator=1
  image_exists "$WORKER_BASE" || [[ -f $WORKER_TAR ]] || need_worker=1
  if ((need_operator == 0 && need_worker == 0)); then
    log "cached (or not needed): $OPERATOR_BASE $WORKER_BASE"
    return 0
  fi
  WORK=$(mktemp -d "$CACHE/.work.XXXXXX")
  ROOTFS=$WORK/rootfs
  timed "debootstrap" debootstrap_rootfs
  ((need_operator)) && timed "operator base: docker import" build_operator_base
  ((need_worker)) && build_worker_base
  # Deleting the 6 GB tree takes a minute or more here: in the background, during the builds
  # (nothing is mounted in it any more; the EXIT trap waits for it).
  if [[ -z $(mounts_under "$WORK") ]]; then
    rm -rf --one-file-system "$WORK" &
    RM_PID=$!
    WORK=""
  fi
}

# ---- the images, from the real Dockerfiles ---------------------------------------------
# docker_build DOCKERFILE BUILD-ARG CACHE-TAG LOG TAG...: build with the legacy builder. A
# multi-stage file's first stage ("AS build") is tagged CACHE-TAG, so that its layers (the
# dependencies) are no dangling images: they stay as build cache and `docker image prune`
# spares them.
docker_build() {
  local dockerfile=$1 build_arg=$2 cache_tag=$3 log_file=$4 tag
  shift 4
  local build=("$DOCKER" build --network host --force-rm --pull=false
               --build-arg "$build_arg" -f "$REPO/$dockerfile")
  : >"$log_file"
  if grep -q '^FROM .* AS build$' "$REPO/$dockerfile"; then
    "${build[@]}" --target build -t "$cache_tag" "$REPO" >>"$log_file" 2>&1 || return 1
  fi
  for tag in "$@"; do
    build+=(-t "$tag")
  done
  "${build[@]}" "$REPO" >>"$log_file" 2>&1
}

# build_app NAME DOCKERFILE BASE REF TAR
build_app() {
  local name=$1 dockerfile=$2 base=$3 ref=$4 tar=$5 arg stable tmp
  stable=detectionjob.local/$name:test
  if [[ -f $tar ]]; then
    log "cached: $tar"
    return 0
  fi
  case $name in
    detectionjob-worker) arg=BASE_IMAGE ;;
    detectionjob-operator) arg=PYTHON_IMAGE ;;
  esac
  log "docker build $ref (FROM $base; log $CACHE/logs/$name.build.log)"
  if ! timed "$name: docker build" docker_build "$dockerfile" "$arg=$base" \
      "detectionjob.local/$name:build-cache" "$CACHE/logs/$name.build.log" "$ref" "$stable"; then
    tail -n 40 "$CACHE/logs/$name.build.log" >&2
    die "docker build of $ref failed"
  fi
  tmp=$(mktemp "$CACHE/.$name.tar.tmp.XXXXXX")
  timed "$name: docker save" "$DOCKER" save -o "$tmp" "$ref" "$stable"
  mv -f "$tmp" "$tar"
  log "$ref: image $("$DOCKER" image inspect -f '{{.Size}}' "$ref" | numfmt --to=iec)," \
      "tar $(du -h "$tar" | cut -f1)"
  prune_app "$name" "$ref" "$tar"
}

# prune_app NAME REF TAR: older tars and images of the same name.
prune_app() {
  local name=$1 ref=$2 tar=$3 old
  [[ ${DETECTIONJOB_KEEP_OLD_IMAGES:-0} == 1 ]] && return 0
  for old in "$CACHE/$name"-*.tar; do
    [[ -f $old && $old != "$tar" ]] || continue
    log "pruning $(basename "$old") (replaced by $(basename "$tar"))"
    rm -f "$old"
  done
  while read -r old; do
    [[ -n $old && $old != "$ref" ]] || continue
    log "pruning image $old"
    "$DOCKER" rmi "$old" >/dev/null
  done < <("$DOCKER" images --format '{{.Repository}}:{{.Tag}}' "$name")
}

prune_bases() {
  local keep old
  [[ ${DETECTIONJOB_KEEP_OLD_IMAGES:-0} == 1 ]] && return 0
  for keep in "$OPERATOR_BASE" "$WORKER_BASE"; do
    while read -r old; do
      [[ -n $old && $old != "$keep" ]] || continue
      log "pruning image $old"
      "$DOCKER" rmi "$old" >/dev/null || log "could not remove $old (still used?)"
    done < <("$DOCKER" images --format '{{.Repository}}:{{.Tag}}' "${keep%:*}")
  done
  "$DOCKER" image prune --force >/dev/null
}

total=$SECONDS
log "worker $WORKER_REF (base $WORKER_BASE, ray $RAY_VERSION, torch $TORCH_VERSION)"
log "operator $OPERATOR_REF (base $OPERATOR_BASE)"
start_dockerd
build_bases
build_app detectionjob-worker Dockerfile.worker "$WORKER_BASE" "$WORKER_REF" "$WORKER_TAR"
build_app detectionjob-operator Dockerfile.operator "$OPERATOR_BASE" "$OPERATOR_REF" "$OPERATOR_TAR"
prune_bases
stop_dockerd
if [[ -n $RM_PID ]]; then
  timed "wait for the rootfs removal (in the background since the bases)" wait "$RM_PID"
  RM_PID=""
fi
for t in "${TIMINGS[@]}"; do
  log "  $t"
done
log "done in $((SECONDS - total)) s; cache $CACHE is $(du -sh "$CACHE" 2>/dev/null | cut -f1)"
print_refs
