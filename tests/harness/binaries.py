"""Where hack/build-binaries.sh put the programs the harness runs.

The versions are pinned only in the build script; the harness asks it
(``--check`` mode builds nothing) for the paths, so the two never disagree.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-binaries.sh"

#: Names accepted by :func:`binary` (``kuberay-crds`` and ``kuberay-samples``
#: are directories of YAML files from the KubeRay module). kubelet,
#: kube-scheduler, kube-proxy and coredns are the test node's (harness.node).
NAMES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
    "etcd",
    "kubelet",
    "kube-scheduler",
    "kube-proxy",
    "ray-operator",
    "kuberay-crds",
    "kuberay-samples",
    "helm",
    "minio",
    "kueue",
    "kueue-crds",
    "coredns",
    "fake-gcs-server",
)


class BinariesMissing(RuntimeError):
    pass


@functools.cache
def _check() -> tuple[dict[str, Path], str]:
    """The script's NAME=PATH lines and its stderr (which names what is missing)."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    paths = {}
    for line in proc.stdout.splitlines():
        name, sep, path = line.partition("=")
        if sep:
            paths[name.strip()] = Path(path.strip())
    return paths, proc.stderr.strip()


def binary(name: str) -> Path:
    """Path of a built program (or of the ``kuberay-crds`` directory).

    Raises :class:`BinariesMissing` only when *this* program is not built, so the
    control-plane tests keep working while, say, the node's programs are missing.
    """
    if name not in NAMES:
        raise KeyError(f"unknown binary {name!r}; known: {', '.join(NAMES)}")
    paths, stderr = _check()
    if name not in paths or not paths[name].exists():
        missing = [n for n in NAMES if n not in paths or not paths[n].exists()]
        raise BinariesMissing(
            f"{name} is not built (missing: {', '.join(missing)}).\n"
            "Run `bash hack/build-binaries.sh` first (about 25 min cold on 2 cores,"
            " cached afterwards; see hack/README.md).\n" + stderr
        )
    return paths[name]
