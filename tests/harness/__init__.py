"""Test harness: a real local Kubernetes control plane, KubeRay and MinIO.

Programs are built by ``hack/build-binaries.sh``; the pytest fixtures live in
:mod:`harness.fixtures` (made available by ``tests/conftest.py``).
"""

from .binaries import BinariesMissing, binary
from .kube import CommandError, KubeControlPlane
from .kuberay import KUBERAY_WATCH_NAMESPACES, KubeRay
from .minio import MinioS3
from .procs import HarnessError, ManagedProcess, free_port
from .waiting import wait_for

__all__ = [
    "KUBERAY_WATCH_NAMESPACES",
    "BinariesMissing",
    "CommandError",
    "HarnessError",
    "KubeControlPlane",
    "KubeRay",
    "ManagedProcess",
    "MinioS3",
    "binary",
    "free_port",
    "wait_for",
]
