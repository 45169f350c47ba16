"""The ``kueue`` session fixture and :func:`start_kueue` (see :mod:`harness.kueue`).

``kueue`` -> :class:`harness.kueue.Kueue` (depends on ``kube`` and ``kuberay``: Kueue's RayJob
integration needs the RayJob CRD before it starts). Kueue's CRDs installed and Established, the
Kueue controller running on the host with the ``ray.io/rayjob`` integration, its webhooks
installed (``https://127.0.0.1:PORT``) and answering. Stopped at the end of the session, webhook
configurations first.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .binaries import BinariesMissing
from .kube import KubeControlPlane
from .kuberay import KubeRay
from .kueue import Kueue
from .procs import HarnessError

__all__ = ["kueue", "start_kueue"]


def start_kueue(kube: KubeControlPlane) -> Kueue:
    """A started :class:`Kueue` against ``kube`` (whose RayJob CRD must be installed).

    A harness error (binaries missing, Kueue not ready) fails the calling fixture with a clear
    message. The caller calls ``.stop()``.
    """
    component = Kueue(kube)
    try:
        return component.start()
    except (BinariesMissing, HarnessError) as e:
        component.stop()
        message = f"Kueue could not start:\n{e}"
    except BaseException:
        component.stop()
        raise
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def kueue(kube: KubeControlPlane, kuberay: KubeRay) -> Iterator[Kueue]:
    """Kueue (RayJob integration) against the ``kube`` control plane. See module docstring."""
    k = start_kueue(kube)
    try:
        yield k
    finally:
        k.stop()
