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
#: are directories of YAML files from the KubeRay module).
NAMES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
    "etcd",
    "ray-operator",
    "kuberay-crds",
    "kuberay-samples",
    "helm",
    "minio",
)


class BinariesMissing(RuntimeError):
    pass


@functools.cache
def _paths() -> dict[str, Path]:
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
    missing = [n for n in NAMES if n not in paths or not paths[n].exists()]
    if proc.returncode != 0 or missing:
        raise BinariesMissing(
            "The control-plane binaries are not built"
            f" (missing: {', '.join(missing) or 'see below'}).\n"
            "Run `bash hack/build-binaries.sh` first (about 20 min cold on 2 cores,"
            " cached afterwards; see hack/README.md).\n" + proc.stderr.strip()
        )
    return paths


def binary(name: str) -> Path:
    """Path of a built program (or of the ``kuberay-crds`` directory)."""
    if name not in NAMES:
        raise KeyError(f"unknown binary {name!r}; known: {', '.join(NAMES)}")
    return _paths()[name]
