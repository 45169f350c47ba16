#!/usr/bin/env bash
# Install, from Debian's packages, what the test cluster's node and the image builds need:
# containerd + runc + the CNI plugins (the node's container runtime), iptables and conntrack
# (kube-proxy), docker.io (builds our Dockerfiles with its legacy builder) and debootstrap (the
# local Debian base image). No service is started: the test harness runs each program itself,
# with its own sockets and state directories. Idempotent; needs root and apt.
#
# Usage: bash hack/install-node.sh [--check]   (--check installs nothing; exit 1 if missing)
set -euo pipefail

PACKAGES=(containerd runc containernetworking-plugins iptables conntrack docker.io debootstrap)
# The programs the harness looks for, one per package above (docker.io provides dockerd).
PROGRAMS=(containerd runc /usr/lib/cni/bridge iptables conntrack dockerd debootstrap)

missing() {
  local p
  for p in "${PROGRAMS[@]}"; do
    if [[ $p == /* ]]; then [[ -x $p ]] || echo "$p"; else command -v "$p" >/dev/null || echo "$p"; fi
  done
}

if [[ "${1:-}" == "--check" ]]; then
  m=$(missing)
  [[ -z $m ]] || { echo "missing: $m (run: bash hack/install-node.sh)" >&2; exit 1; }
  exit 0
fi

[[ -z $(missing) ]] && exit 0
[[ $(id -u) == 0 ]] || { echo "hack/install-node.sh needs root (apt-get install)" >&2; exit 1; }

# Keep maintainer scripts from starting containerd or dockerd: the harness starts its own.
policy=/usr/sbin/policy-rc.d
restore=""
if [[ -e $policy ]]; then restore=$(mktemp); cp -p "$policy" "$restore"; fi
cleanup() { if [[ -n $restore ]]; then mv -f "$restore" "$policy"; else rm -f "$policy"; fi; }
trap cleanup EXIT
printf '#!/bin/sh\nexit 101\n' > "$policy"
chmod 755 "$policy"

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
m=$(missing)
[[ -z $m ]] || { echo "still missing after apt-get install: $m" >&2; exit 1; }
