"""The product run whole: our images on the test node, the operator installed with Helm.

Session fixture ``platform`` (marker ``e2e``): the node-capable control plane and its node
(``cluster``), KubeRay on the host (resolving cluster names through the node's DNS), MinIO on the
host's own address (Pods cannot reach the host's loopback), our worker and operator images built
by ``hack/build-images.sh`` and imported into the node, and ``helm install`` of our chart into a
namespace that enforces the "restricted" Pod Security Standard. Jobs run in ``JOBS_NAMESPACE``,
restricted too.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import images as built_images
from harness.fixtures import start_component
from harness.kube import KubeControlPlane
from harness.kuberay import KubeRay
from harness.kueue import Kueue
from harness.minio import MinioS3
from harness.oci_layout import normalized_name
from harness.waiting import wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent))  # e2etest

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "detectionjob-operator"
OPERATOR_NAMESPACE = "detectionjob-system"
JOBS_NAMESPACE = "vision"
RELEASE = "dj"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.e2e)


@dataclass
class Platform:
    """What the e2e tests drive: the cluster as a user and an admin see it."""

    kube: KubeControlPlane
    node: object  # harness.node.Node
    kuberay: KubeRay
    s3: MinioS3
    worker_image: str  # the worker image's ref on the node (spec.image)
    operator_image: str
    namespace: str = JOBS_NAMESPACE

    def kubectl(self, *args: str, input: str | None = None, check: bool = True):
        return self.kube.kubectl(*args, input=input, check=check)


def _helm_install(kube: KubeControlPlane, operator_image: str) -> None:
    repo, tag = operator_image.rsplit(":", 1)
    kube.helm(
        "install", RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE,
        "--set", f"image.repository={repo}", "--set", f"image.tag={tag}",
        "--set", "image.pullPolicy=IfNotPresent",
        # The operator's share of the 2-core test node; the chart's default is 100m.
        "--set", "resources.requests.cpu=50m",
        "--wait", "--timeout", "300s",
        timeout=360,
    )
    # The chart has no readiness probe, so `--wait` may return before kopf has started: wait for
    # the operator's own start-up line (a crash loop fails here, with the operator's log).
    deploy = f"deployment/{RELEASE}-detectionjob-operator"

    def started() -> bool:
        logs = kube.kubectl("logs", "-n", OPERATOR_NAMESPACE, deploy, check=False)
        return "detectionjob operator started" in logs.stdout

    try:
        wait_for("the operator's start-up line", started, timeout=180, interval=2)
    except AssertionError as exc:
        logs = kube.kubectl("logs", "-n", OPERATOR_NAMESPACE, deploy, "--previous", check=False)
        raise AssertionError(f"{exc}\n{logs.stdout}{logs.stderr}") from None


def _remove_older(node, ref: str) -> None:
    """Drop earlier builds of the image ``ref`` from the node's cached containerd root (6+ GB each).

    Also the kubelet's ``sha256:<id>`` names of images that no named image points at any more.
    Run after importing ``ref``, so that the layers it shares with them stay in the content store.
    """
    repo, keep = ref.rsplit(":", 1)[0], normalized_name(ref)
    rows = [line.split() for line in node.ctr("images", "ls").stdout.splitlines()[1:]]
    names = {row[0]: row[2] for row in rows if len(row) > 2}  # NAME TYPE DIGEST ...
    old = [n for n in names if not n.startswith("sha256:") and n != keep
           and n.rsplit(":", 1)[0].endswith("/" + repo) and not n.endswith(":test")]
    kept = {d for n, d in names.items() if not n.startswith("sha256:") and n not in old}
    old += [n for n, d in names.items() if n.startswith("sha256:") and d not in kept]
    if old:
        node.ctr("images", "rm", *old, check=False)


@pytest.fixture(scope="session")
def platform(cluster, harness_workdir) -> Iterator[Platform]:
    """See the module docstring."""
    kube, node = cluster.kube, cluster.node
    images = built_images.build().images  # a no-op when hack/test.sh built them already
    for image in images.values():
        if not node.has_image(image.ref):  # the node's containerd root is cached between runs
            node.import_image(image.tar)  # only the layers it does not have yet
            _remove_older(node, image.ref)
    s3 = MinioS3(harness_workdir / "logs-e2e", host=node.host_ip)
    kuberay = KubeRay(kube, watch_namespaces=(JOBS_NAMESPACE,), wrap=node.dns_wrapped)
    try:
        s3.start()
        for namespace in (OPERATOR_NAMESPACE, JOBS_NAMESPACE):
            kube.create_namespace(namespace, labels=RESTRICTED)
        kuberay.start()
        _helm_install(kube, images["operator"].ref)
        with s3.exported():
            yield Platform(kube=kube, node=node, kuberay=kuberay, s3=s3,
                           worker_image=images["worker"].ref, operator_image=images["operator"].ref)
    finally:
        kube.helm("uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--wait", check=False)
        kuberay.stop()
        s3.stop()


@pytest.fixture(scope="session")
def kueue(platform: Platform) -> Iterator[Kueue]:
    """Kueue against the platform's cluster (KubeRay's CRDs are installed by then)."""
    k = start_component(Kueue(platform.kube), "Kueue")
    try:
        yield k
    finally:
        k.stop()
