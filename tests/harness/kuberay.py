"""KubeRay's CRDs and the real KubeRay operator, running against the test apiserver."""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from .binaries import binary
from .kube import KubeControlPlane
from .procs import ManagedProcess, free_port

#: The only namespaces the KubeRay operator watches (``--watch-namespace``).
#: Tests that play KubeRay themselves (patching RayJob status by hand) must use
#: namespaces outside this list, so the real operator does not fight them.
KUBERAY_WATCH_NAMESPACES = ("default", "kuberay-watched")

CRD_NAMES = (
    "rayclusters.ray.io",
    "rayjobs.ray.io",
    "rayservices.ray.io",
    "raycronjobs.ray.io",
)


class KubeRay:
    """The ``kuberay`` fixture's object.

    Attributes:
        kube: the :class:`~harness.kube.KubeControlPlane` it runs against.
        watch_namespaces: :data:`KUBERAY_WATCH_NAMESPACES`.
        crd_dir: the CRD YAMLs that were installed (from the operator's own module).
        operator: the :class:`~harness.procs.ManagedProcess` of ``ray-operator``.
        health_url / metrics_url: the operator's probe and metrics endpoints.
    """

    def __init__(self, kube: KubeControlPlane,
                 watch_namespaces: Sequence[str] = KUBERAY_WATCH_NAMESPACES,
                 wrap: Callable[[list[str]], list[str]] | None = None) -> None:
        """``wrap`` turns the operator's argv into the argv to run (e.g. with the node's DNS)."""
        self.kube = kube
        self.watch_namespaces = tuple(watch_namespaces)
        self.wrap = wrap
        self.crd_dir = Path(binary("kuberay-crds"))
        self.operator: ManagedProcess | None = None

    def start(self) -> KubeRay:
        t0 = time.monotonic()
        self.install_crds()
        for ns in self.watch_namespaces:
            self.kube.create_namespace(ns)
        self._start_operator()
        self.startup_seconds = time.monotonic() - t0
        return self

    def install_crds(self) -> None:
        files = sorted(self.crd_dir.glob("*.yaml"))
        args = []
        for f in files:
            args += ["-f", str(f)]
        # Server-side apply: the RayCluster CRD is too big for the
        # last-applied-configuration annotation of client-side apply.
        self.kube.kubectl("apply", "--server-side", "--force-conflicts", *args)
        present = [n for n in CRD_NAMES if any(n.split(".")[0] in f.name for f in files)]
        self.kube.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=120s",
            *[f"crd/{n}" for n in present],
        )

    def _start_operator(self) -> None:
        probe, metrics = free_port(), free_port()
        self.health_url = f"http://127.0.0.1:{probe}"
        self.metrics_url = f"http://127.0.0.1:{metrics}"
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kube.kubeconfig)
        env.pop("ENABLE_WEBHOOKS", None)  # webhooks off (would need a serving cert)
        argv = [
            binary("ray-operator"),
            "--watch-namespace=" + ",".join(self.watch_namespaces),
            "--enable-leader-election=false",
            f"--metrics-addr=127.0.0.1:{metrics}",
            f"--health-probe-bind-address=127.0.0.1:{probe}",
            "--log-stdout-encoder=console",
        ]
        self.operator = ManagedProcess(
            "kuberay-operator",
            self.wrap(argv) if self.wrap else argv,
            self.kube.log_dir / "kuberay-operator.log",
            env=env,
        )

        def ready() -> bool:
            with urllib.request.urlopen(self.health_url + "/readyz", timeout=2) as r:
                return r.status == 200

        self.operator.wait_until(ready, 120, "KubeRay operator /readyz")

    def stop(self) -> None:
        if self.operator:
            self.operator.stop()
            self.operator = None
