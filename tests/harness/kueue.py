"""Kueue (``sigs.k8s.io/kueue``) as a host process against the test apiserver, with its webhooks.

In a real cluster Kueue runs in a Pod behind a Service and manages its own webhook certificates.
Here it runs on the host like the KubeRay operator (admin kubeconfig, no RBAC of its own), with:

* its CRDs (from the same module version as the binary) applied and Established;
* a ``Configuration`` file (``--config``): leader election and internal certificate management
  off, ``manageJobsWithoutQueueName: false``, only the integrations asked for (default
  ``ray.io/rayjob``), the ``VisibilityOnDemand`` API server off, and every listener (webhook,
  health probes, metrics) on a free ``127.0.0.1`` port;
* a webhook serving certificate for ``127.0.0.1`` issued by the cluster's CA (:mod:`harness.pki`);
* upstream's Mutating/ValidatingWebhookConfiguration (the module's
  ``config/components/webhook/manifests.yaml``), reduced to the webhooks for Kueue's own kinds and
  the enabled integrations, each pointing at ``https://127.0.0.1:<port><path>`` with the CA bundle.
  The apiserver is a host process too (on 127.0.0.1, or 0.0.0.0 in node mode), so it reaches them.

Kueue 0.17 always reads a metrics serving certificate from the fixed path
``/etc/kueue/metrics/certs/tls.{crt,key}`` when internal certificate management is off. Rather
than writing into the host's /etc, the process runs in a private mount namespace where a read-only
overlay puts that directory over /etc (the host's /etc stays untouched and visible).
"""

from __future__ import annotations

import base64
import os
import shutil
import time
import urllib.request
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from . import pki
from .binaries import binary
from .kube import KubeControlPlane
from .procs import ManagedProcess, free_port

KUEUE_API = "kueue.x-k8s.io/v1beta2"
CONFIG_API = "config.kueue.x-k8s.io/v1beta2"
MUTATING = "kueue-mutating-webhook-configuration"
VALIDATING = "kueue-validating-webhook-configuration"
#: Integration framework -> the ray.io resource whose webhooks it needs.
_FRAMEWORK_RESOURCES = {
    "ray.io/rayjob": "rayjobs",
    "ray.io/raycluster": "rayclusters",
    "ray.io/rayservice": "rayservices",
}


def podset_requests(rayjob: Mapping[str, Any]) -> dict[str, Decimal]:
    """What Kueue 0.17 charges a RayJob's quota: head + workers x replicas + submitter.

    The submitter PodSet exists in ``K8sJobMode`` only (Kueue's default template when the RayJob
    has no ``submitterPodTemplate``: 500m CPU, 200Mi). Init containers are ignored (none here).
    """
    from kubernetes.utils.quantity import parse_quantity

    spec = rayjob["spec"]
    cluster = spec["rayClusterSpec"]
    pods: list[tuple[Mapping[str, Any], int]] = [(cluster["headGroupSpec"]["template"]["spec"], 1)]
    for group in cluster.get("workerGroupSpecs", []):
        count = group.get("replicas", 1) * max(1, group.get("numOfHosts", 1))
        pods.append((group["template"]["spec"], count))
    if spec.get("submissionMode", "K8sJobMode") == "K8sJobMode":
        template = spec.get("submitterPodTemplate") or {"spec": {"containers": [
            {"resources": {"requests": {"cpu": "500m", "memory": "200Mi"}}}]}}
        pods.append((template["spec"], 1))
    total: dict[str, Decimal] = {}
    for pod, count in pods:
        for container in pod["containers"]:
            for name, value in (container.get("resources", {}).get("requests") or {}).items():
                total[name] = total.get(name, Decimal(0)) + parse_quantity(value) * count
    return total


def quantity(value: Decimal) -> str:
    """A Kubernetes quantity string for ``value`` (whole numbers as such, else millis)."""
    return str(int(value)) if value == value.to_integral_value() else f"{int(value * 1000)}m"


def queue_objects(cluster_queue: str, local_queue: str, namespace: str,
                  quota: Mapping[str, Decimal], flavor: str = "default-flavor") -> list[dict[str, Any]]:
    """A ResourceFlavor, a ClusterQueue with ``quota`` (all of it nominal) and a LocalQueue."""
    return [
        {"apiVersion": KUEUE_API, "kind": "ResourceFlavor", "metadata": {"name": flavor}},
        {"apiVersion": KUEUE_API, "kind": "ClusterQueue", "metadata": {"name": cluster_queue},
         "spec": {"namespaceSelector": {}, "resourceGroups": [{
             "coveredResources": sorted(quota),
             "flavors": [{"name": flavor, "resources": [
                 {"name": r, "nominalQuota": quantity(quota[r])} for r in sorted(quota)]}],
         }]}},
        {"apiVersion": KUEUE_API, "kind": "LocalQueue",
         "metadata": {"name": local_queue, "namespace": namespace},
         "spec": {"clusterQueue": cluster_queue}},
    ]


class Kueue:
    """The ``kueue`` fixture's object.

    Attributes:
        kube: the :class:`~harness.kube.KubeControlPlane` it runs against.
        frameworks: the enabled integrations (``integrations.frameworks``).
        workdir: its configuration, certificates and overlay (``<kube workdir>/kueue``).
        crd_dir / webhook_manifest: the YAML it installs (set by :meth:`start`).
        process: the :class:`~harness.procs.ManagedProcess` of ``kueue``.
        webhook_url / health_url: ``https://127.0.0.1:PORT`` and ``http://127.0.0.1:PORT``.
    """

    def __init__(self, kube: KubeControlPlane, frameworks: Sequence[str] = ("ray.io/rayjob",)) -> None:
        self.kube = kube
        self.frameworks = tuple(frameworks)
        self.workdir = kube.workdir / "kueue"
        self.process: ManagedProcess | None = None
        self.webhook_url = self.health_url = ""

    def start(self) -> Kueue:
        """CRDs, then the process (until ``/readyz``), then its webhooks (until they answer)."""
        t0 = time.monotonic()
        self.crd_dir = Path(binary("kueue-crds"))  # resolved here: a missing build fails start()
        self.webhook_manifest = Path(binary("kueue")).parent / "webhook-manifests.yaml"
        self.install_crds()
        self._start_process()
        self.install_webhooks()
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Webhook configurations first, so the apiserver never calls a dead webhook; then the process."""
        if self.process:
            self.remove_webhooks()
            self.process.stop()
            self.process = None

    def kubectl_apply(self, objects: Sequence[Mapping[str, Any]]) -> None:
        """Apply Kueue objects (server-side), e.g. :func:`queue_objects`."""
        self.kube.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(list(objects)))

    # ---- CRDs ------------------------------------------------------------------------------------
    def install_crds(self) -> None:
        files = sorted(self.crd_dir.glob("*.yaml"))
        args = [a for f in files for a in ("-f", str(f))]
        # Server-side: the Workload CRD (1.4 MB) is too big for client-side apply's annotation.
        self.kube.kubectl("apply", "--server-side", "--force-conflicts", *args)
        names = [yaml.safe_load(f.read_text())["metadata"]["name"] for f in files]
        self.kube.kubectl("wait", "--for=condition=Established", "--timeout=120s",
                          *[f"crd/{n}" for n in names])

    # ---- the process -----------------------------------------------------------------------------
    def _write_files(self, webhook_port: int, health_port: int, metrics_port: int) -> Path:
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        certs = pki.issue(self.kube.pki, self.workdir / "certs", "tls", "kueue-webhook",
                          server=True, dns=("localhost",), ips=("127.0.0.1",))
        # The overlay's top layer: <etc>/kueue/metrics/certs/tls.{crt,key} (see module docstring).
        metrics = self.workdir / "etc" / "kueue" / "metrics" / "certs"
        metrics.mkdir(parents=True)
        for path in (certs.cert, certs.key):
            shutil.copy2(path, metrics / path.name)
        config = {
            "apiVersion": CONFIG_API,
            "kind": "Configuration",
            "namespace": "kueue-system",
            "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
            "metrics": {"bindAddress": f"127.0.0.1:{metrics_port}"},
            "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(certs.cert.parent)},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "manageJobsWithoutQueueName": False,
            "integrations": {"frameworks": list(self.frameworks)},
            "featureGates": {"VisibilityOnDemand": False},
        }
        path = self.workdir / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _argv(self, config: Path) -> list[str]:
        """``kueue --config`` in a private mount namespace with the metrics certificate over /etc."""
        script = 'mount -t overlay kueue-etc -o "lowerdir=$0:/etc" /etc && exec "$@"'
        unshare = ["unshare", "--mount", "--propagation", "private"]
        if os.geteuid() != 0:
            unshare.append("--map-root-user")  # an unprivileged overlay needs a user namespace
        return [*unshare, "/bin/sh", "-c", script, str(self.workdir / "etc"),
                str(binary("kueue")), f"--config={config}", "--zap-log-level=info"]

    def _start_process(self) -> None:
        webhook, health, metrics = free_port(), free_port(), free_port()
        self.webhook_url = f"https://127.0.0.1:{webhook}"
        self.health_url = f"http://127.0.0.1:{health}"
        config = self._write_files(webhook, health, metrics)
        env = dict(os.environ, KUBECONFIG=str(self.kube.kubeconfig))
        self.process = ManagedProcess("kueue", self._argv(config), self.kube.log_dir / "kueue.log",
                                      env=env)

        def ready() -> bool:  # readyz: the webhook server is listening
            with urllib.request.urlopen(self.health_url + "/readyz", timeout=2) as r:
                return r.status == 200

        self.process.wait_until(ready, 120, "Kueue /readyz")

    # ---- webhooks --------------------------------------------------------------------------------
    def webhook_configurations(self) -> list[dict[str, Any]]:
        """Upstream's webhook configurations for Kueue's kinds and the enabled integrations."""
        ray_resources = {_FRAMEWORK_RESOURCES[f] for f in self.frameworks if f in _FRAMEWORK_RESOURCES}
        ca_bundle = base64.b64encode(self.kube.ca_file.read_bytes()).decode()

        def wanted(hook: Mapping[str, Any]) -> bool:
            rules = hook.get("rules", [])
            return bool(rules) and all(
                set(r["apiGroups"]) == {"kueue.x-k8s.io"}
                or (set(r["apiGroups"]) == {"ray.io"} and set(r["resources"]) <= ray_resources)
                for r in rules)

        configs = []
        for doc in yaml.safe_load_all(self.webhook_manifest.read_text()):
            if not doc:
                continue
            name = MUTATING if doc["kind"] == "MutatingWebhookConfiguration" else VALIDATING
            hooks = [h for h in doc["webhooks"] if wanted(h)]
            for hook in hooks:
                path = hook["clientConfig"]["service"]["path"]
                hook["clientConfig"] = {"url": self.webhook_url + path, "caBundle": ca_bundle}
            configs.append({**doc, "metadata": {"name": name}, "webhooks": hooks})
        return configs

    def install_webhooks(self) -> None:
        """Install the webhooks; wait until the apiserver gets answers through them."""
        self.kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(self.webhook_configurations()))
        # A server-side dry run of a ResourceFlavor passes both of its webhooks (Fail policy).
        probe = yaml.safe_dump({"apiVersion": KUEUE_API, "kind": "ResourceFlavor",
                                "metadata": {"name": "kueue-webhook-probe"}})
        assert self.process is not None
        self.process.wait_until(
            lambda: self.kube.kubectl("create", "--dry-run=server", "-f", "-", input=probe,
                                      check=False).returncode == 0,
            60, "the apiserver to reach Kueue's webhooks", interval=0.5)

    def remove_webhooks(self) -> None:
        self.kube.kubectl("delete", "--ignore-not-found", f"mutatingwebhookconfiguration/{MUTATING}",
                          f"validatingwebhookconfiguration/{VALIDATING}", check=False)

