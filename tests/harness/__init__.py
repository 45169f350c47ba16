"""Test harness: a real local Kubernetes control plane, a node that runs Pods, KubeRay, MinIO and a
GCS emulator.

Programs are built by ``hack/build-binaries.sh``; the pytest fixtures live in
:mod:`harness.fixtures` (made available by ``tests/conftest.py``).
"""

from .binaries import BinariesMissing, binary
from .gcs import FakeGcs, SilentServer
from .kube import CommandError, KubeControlPlane
from .kuberay import KUBERAY_WATCH_NAMESPACES, KubeRay
from .minio import MinioS3
from .node import Node, build_c_image, pause_image, write_scratch_image
from .procs import HarnessError, ManagedProcess, free_port
from .waiting import wait_for

__all__ = [
    "KUBERAY_WATCH_NAMESPACES",
    "BinariesMissing",
    "CommandError",
    "FakeGcs",
    "HarnessError",
    "KubeControlPlane",
    "KubeRay",
    "ManagedProcess",
    "MinioS3",
    "Node",
    "SilentServer",
    "binary",
    "build_c_image",
    "free_port",
    "pause_image",
    "wait_for",
    "write_scratch_image",
]
