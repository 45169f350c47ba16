"""pytest fixtures giving tests a real control plane (see hack/README.md).

Made available to every test by ``tests/conftest.py``. All fixtures are
session-scoped: one etcd + kube-apiserver + kube-controller-manager, one
KubeRay operator and one MinIO per pytest session, started on free
127.0.0.1 ports the first time a test asks for them and stopped (process
group killed) at the end of the session.

Fixtures:

``kube`` -> :class:`harness.kube.KubeControlPlane`
    ``.kubeconfig`` (admin kubeconfig path, client cert in ``system:masters``),
    ``.server`` (``https://127.0.0.1:PORT``), ``.api_client()`` (a
    ``kubernetes.client.ApiClient`` for admin), ``.kubectl(*args, input=None,
    check=True)`` and ``.helm(*args, check=True)`` (``CompletedProcess``, text
    mode, admin; a failed command raises ``CommandError`` showing stderr),
    ``.serviceaccount_kubeconfig(namespace, name)`` (creates the ServiceAccount
    if needed, issues a token with the TokenRequest API, returns the path of a
    kubeconfig acting as it), ``.create_namespace(name, labels=None)``,
    ``.bin(name)`` (path of a built program: ``kube-apiserver``,
    ``kube-controller-manager``, ``kubectl``, ``etcd``, ``ray-operator``,
    ``helm``, ``minio``, or the directories ``kuberay-crds`` and
    ``kuberay-samples``), ``.log_dir`` and ``.ca_file``.
    RBAC (``--authorization-mode=Node,RBAC``), Pod Security admission and the
    garbage-collector, namespace, serviceaccount and root-CA-publisher
    controllers are real. There is no kubelet or scheduler: Pods never run.

``kuberay`` -> :class:`harness.kuberay.KubeRay` (depends on ``kube``)
    KubeRay's CRDs (RayCluster, RayJob, RayService, RayCronJob; from the
    operator's own module) installed and Established, and the KubeRay operator
    running with ``--watch-namespace`` = :data:`harness.KUBERAY_WATCH_NAMESPACES`
    (``("default", "kuberay-watched")``, both created), leader election and
    webhooks off. Use namespaces outside that list to play KubeRay by hand.

``minio_s3`` -> :class:`harness.minio.MinioS3`
    ``.endpoint_url``, ``.access_key``, ``.secret_key``, ``.region``,
    ``.bucket`` (created for the session), ``.env`` (``AWS_*`` variables) and
    ``.filesystem()`` (``pyarrow.fs.S3FileSystem``). The ``.env`` variables are
    set in ``os.environ`` for the whole session and restored afterwards.

``gcs`` -> :class:`harness.gcs.FakeGcs`
    fake-gcs-server (a real GCS emulator, JSON API over HTTP) with ``.bucket`` (created for the
    session), ``.endpoint_url``, ``.env`` (``CLOUD_STORAGE_EMULATOR_ENDPOINT`` and the metadata-server
    variables pointed at a closed loopback port), ``.filesystem()`` (``pyarrow.fs.GcsFileSystem``),
    ``.uri(key)`` and ``.buckets()``. The ``.env`` variables are set in ``os.environ`` for the whole
    session and restored afterwards.

``cluster`` -> :class:`Cluster` (``.kube``, ``.node``); ``node`` -> its ``.node``
    A second, separate control plane started with ``node_mode=True`` (apiserver
    on every address, advertising the host IP) plus a :class:`harness.node.Node`:
    containerd, kubelet, kube-scheduler, kube-proxy and CoreDNS as host
    processes, the Node ``Ready``; Pods really run. Node API: ``.name``,
    ``.host_ip``, ``.pod_subnet``, ``.containerd_address``, ``.resolv_conf``,
    ``.dns_wrapped(argv)``, ``.import_image(path_or_stream)``, ``.ctr(*args)``,
    ``.sandbox_image`` (the pause image; a do-nothing container), ``.host_before``,
    ``.log_dir``, ``.stop()``, ``.leftovers()``. Needs root and
    ``hack/install-node.sh``; tests that use it are marked ``e2e``. At the end
    of the session the node is stopped and the fixture fails if the host is not
    back as it was (iptables chains, ``cni0``, cgroups, mounts, sysctls).

If the binaries are not built, these fixtures FAIL (never skip) and say to run
``bash hack/build-binaries.sh``. When a test that uses them fails, the last
100 lines of every component's log are attached to its report.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from . import procs
from .binaries import BinariesMissing
from .gcs import FakeGcs
from .kube import KubeControlPlane
from .kuberay import KubeRay
from .kueue import Kueue
from .minio import MinioS3
from .node import Node
from .procs import HarnessError

__all__ = [
    "kueue",
    "start_component",
    "Cluster",
    "cluster",
    "harness_workdir",
    "kube",
    "kuberay",
    "minio_s3",
    "gcs",
    "node",
    "pytest_runtest_makereport",
]

HARNESS_FIXTURES = frozenset({"kube", "kuberay", "minio_s3", "gcs", "cluster", "node", "kueue"})


def start_component(component, what: str):
    """Start a harness component; turn harness errors into a clear fixture failure.

    Also for fixtures outside this module (tests/e2e) that start a component on another cluster.
    """
    try:
        return component.start()
    except (BinariesMissing, HarnessError) as e:
        component.stop()
        message = f"{what} could not start:\n{e}"
    except BaseException:
        component.stop()
        raise
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def harness_workdir(tmp_path_factory: pytest.TempPathFactory):
    """Per-session directory for PKI, kubeconfigs and the ``logs/`` of every component."""
    return tmp_path_factory.mktemp("control-plane")


@pytest.fixture(scope="session")
def kube(harness_workdir) -> Iterator[KubeControlPlane]:
    """A real etcd + kube-apiserver + kube-controller-manager. See module docstring."""
    cp = start_component(KubeControlPlane(harness_workdir), "The Kubernetes control plane")
    try:
        yield cp
    finally:
        cp.stop()


@dataclass(frozen=True)
class Cluster:
    """The ``cluster`` fixture: a node-mode control plane and its one node."""

    kube: KubeControlPlane
    node: Node


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A node-mode control plane + a Ready :class:`~harness.node.Node`. See module docstring."""
    workdir = tmp_path_factory.mktemp("cluster")
    cp = start_component(KubeControlPlane(workdir, node_mode=True), "The node-mode Kubernetes control plane")
    try:
        node = start_component(Node(cp, workdir / "node"), "The test node")
        try:
            yield Cluster(cp, node)
        finally:
            node.stop()
        leftovers = node.leftovers()
        if leftovers or node.teardown_errors:
            pytest.fail(
                "the test node did not leave the host as it was:\n"
                + "\n".join(leftovers + node.teardown_errors)
                + f"\n(logs: {node.log_dir})",
                pytrace=False,
            )
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def node(cluster: Cluster) -> Node:
    """The :class:`~harness.node.Node` of the ``cluster`` fixture."""
    return cluster.node


@pytest.fixture(scope="session")
def kuberay(kube: KubeControlPlane) -> Iterator[KubeRay]:
    """KubeRay CRDs + the real KubeRay operator. See module docstring."""
    kr = start_component(KubeRay(kube), "KubeRay")
    try:
        yield kr
    finally:
        kr.stop()


@pytest.fixture(scope="session")
def kueue(kube: KubeControlPlane, kuberay: KubeRay) -> Iterator[Kueue]:
    """Kueue (RayJob integration) against ``kube``; needs KubeRay's RayJob CRD, hence ``kuberay``.

    CRDs Established, the controller on the host, its webhooks answering; stopped (webhook
    configurations first) at the end of the session. See :mod:`harness.kueue`.
    """
    k = start_component(Kueue(kube), "Kueue")
    try:
        yield k
    finally:
        k.stop()


@pytest.fixture(scope="session")
def minio_s3(harness_workdir) -> Iterator[MinioS3]:
    """A real MinIO with a fresh bucket; ``AWS_*`` set in os.environ. See module docstring."""
    s3 = start_component(MinioS3(harness_workdir / "logs"), "MinIO")
    try:
        with s3.exported():
            yield s3
    finally:
        s3.stop()


@pytest.fixture(scope="session")
def gcs(harness_workdir) -> Iterator[FakeGcs]:
    """A real GCS emulator with a fresh bucket; its ``env`` set in os.environ. See module docstring."""
    emulator = start_component(FakeGcs(harness_workdir / "logs"), "fake-gcs-server")
    try:
        with emulator.exported():
            yield emulator
    finally:
        emulator.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Attach the tail of every running component's log to a failed harness test."""
    report = yield
    if report.failed:
        uses_harness = bool(HARNESS_FIXTURES & set(getattr(item, "fixturenames", ())))
        marked = any(item.get_closest_marker(m) is not None for m in ("cluster", "e2e"))
        if uses_harness or marked:
            for p in procs.running():
                state = "running" if p.alive() else f"exited {p.proc.returncode}"
                report.sections.append(
                    (f"{p.name} log ({state}; {p.log_path}), last 100 lines", p.log_tail(100))
                )
    return report
