"""The test node runs real Pods: kubelet + containerd + kube-proxy + CoreDNS on this host.

Needs root, ``bash hack/install-node.sh`` and ``bash hack/build-binaries.sh``. The last
test stops the node, checks the host is back as it was, and starts it again.
"""

from __future__ import annotations

import io
import ipaddress
import json
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
import yaml
from harness import build_c_image, wait_for, write_scratch_image
from harness.fixtures import Cluster
from harness.images import image_config
from harness.node import BRIDGE, kubepods_cgroups, read_sysctl
from harness.oci_layout import write_oci_layout

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROBE_IMAGE = "detectionjob.local/probe:1"

#: ``probe`` prints a greeting; ``probe resolve:NAME...`` prints ``NAME ADDRESS`` per name
#: (exit 1 if one fails); ``probe tcp:HOST:PORT`` connects once.
PROBE_C = r"""
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int resolve(const char *name) {
    struct addrinfo hints = {0}, *res, *p;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int err = getaddrinfo(name, NULL, &hints, &res);
    if (err) { printf("%s FAILED %s\n", name, gai_strerror(err)); return 1; }
    for (p = res; p; p = p->ai_next) {
        char buf[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &((struct sockaddr_in *)p->ai_addr)->sin_addr, buf, sizeof buf);
        printf("%s %s\n", name, buf);
    }
    freeaddrinfo(res);
    return 0;
}

static int tcp(char *spec) {
    char *colon = strrchr(spec, ':');
    if (!colon) return 1;
    *colon = 0;
    struct addrinfo hints = {0}, *res;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(spec, colon + 1, &hints, &res)) { printf("tcp %s FAILED resolve\n", spec); return 1; }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int rc = connect(fd, res->ai_addr, res->ai_addrlen);
    printf("tcp %s:%s %s\n", spec, colon + 1, rc == 0 ? "connected" : "FAILED");
    close(fd);
    freeaddrinfo(res);
    return rc != 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        printf("hello from the probe: uid=%d gid=%d\n", (int)getuid(), (int)getgid());
        return 0;
    }
    int failed = 0;
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "resolve:", 8)) failed |= resolve(argv[i] + 8);
        else if (!strncmp(argv[i], "tcp:", 4)) failed |= tcp(argv[i] + 4);
    }
    fflush(stdout);
    return failed;
}
"""

RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def pod(name: str, image: str, args: list[str] | None = None, labels: dict | None = None) -> dict:
    """A Pod that passes the ``restricted`` Pod Security level, from a locally imported image."""
    container = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "Never",
        "securityContext": RESTRICTED_CONTAINER,
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "100m", "memory": "32Mi"},
        },
    }
    if args:
        container["args"] = args
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container],
        },
    }


def apply(cluster: Cluster, namespace: str, *objects: dict) -> None:
    cluster.kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects))


def phase(cluster: Cluster, namespace: str, name: str) -> str:
    out = cluster.kube.kubectl("get", "pod", name, "-n", namespace, "-o", "jsonpath={.status.phase}")
    return out.stdout


def phase_ip(cluster: Cluster, namespace: str, name: str) -> str:
    return cluster.kube.kubectl("get", "pod", name, "-n", namespace, "-o", "jsonpath={.status.podIP}").stdout


def wait_phase(cluster: Cluster, namespace: str, name: str, want: str, timeout: float = 120) -> None:
    def reached() -> bool:
        now = phase(cluster, namespace, name)
        if now == "Failed" and want != "Failed":
            logs = cluster.kube.kubectl("logs", "-n", namespace, name, check=False)
            raise AssertionError(f"Pod {namespace}/{name} Failed: {logs.stdout}{logs.stderr}")
        return now == want

    wait_for(f"Pod {namespace}/{name} {want}", reached, timeout, interval=1)


@pytest.fixture(scope="module")
def probe_image(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    tar = build_c_image(PROBE_C, PROBE_IMAGE, tmp_path_factory.mktemp("probe"), name="probe")
    assert any("probe" in ref for ref in cluster.node.import_image(tar))
    return PROBE_IMAGE


@pytest.fixture(scope="module")
def restricted_ns(cluster: Cluster) -> str:
    name = unique("node-e2e")
    cluster.kube.create_namespace(name, labels={"pod-security.kubernetes.io/enforce": "restricted"})
    wait_for(
        "the default ServiceAccount",
        lambda: (
            cluster.kube.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0
        ),
        60,
    )
    return name


def test_node_becomes_ready(cluster: Cluster):
    node = json.loads(cluster.kube.kubectl("get", "node", cluster.node.name, "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions["Ready"] == "True", conditions
    assert not [t for t in node["spec"].get("taints", []) if t["key"].startswith("node.kubernetes.io/")]
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == cluster.node.host_ip == cluster.kube.host_ip
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"].startswith("v1.")
    assert info["containerRuntimeVersion"].startswith("containerd://")

    # The apiserver publishes itself at the host IP for Pods (the kubernetes Service).
    def kubernetes_endpoints() -> list[str]:
        out = cluster.kube.kubectl(
            "get",
            "endpointslices",
            "-n",
            "default",
            "-l",
            "kubernetes.io/service-name=kubernetes",
            "-o",
            "json",
        ).stdout
        return [a for s in json.loads(out)["items"] for e in s.get("endpoints") or [] for a in e["addresses"]]

    assert wait_for("the kubernetes Service's EndpointSlice", kubernetes_endpoints, 60) == [
        cluster.node.host_ip
    ]


def test_import_image_from_streams(cluster: Cluster, tmp_path: Path):
    """``import_image`` takes what ``docker save`` writes: a pipe, or any binary stream."""
    tar = build_c_image(PROBE_C, "detectionjob.local/probe:stream", tmp_path, name="probe")
    with subprocess.Popen(["cat", str(tar)], stdout=subprocess.PIPE) as producer:
        assert producer.stdout is not None
        assert cluster.node.import_image(producer.stdout) == ["detectionjob.local/probe:stream"]
    assert cluster.node.import_image(io.BytesIO(tar.read_bytes())) == ["detectionjob.local/probe:stream"]
    listed = cluster.node.ctr("images", "ls", "-q").stdout.split()
    assert "detectionjob.local/probe:stream" in listed
    cluster.node.ctr("images", "rm", "detectionjob.local/probe:stream")


def test_a_rebuilt_image_imports_only_its_new_layers(cluster: Cluster, tmp_path: Path, restricted_ns: str):
    """An image that shares its base layer with an imported one goes in as its new layers only,
    and still runs once the first image is removed (the shared layer stays in the store)."""
    node = cluster.node
    # The node's content store outlives test runs (its root is cached), and removing an image
    # frees its blobs only at containerd's next collection: a new layer unique to this run is
    # one the store cannot already hold.
    marker = unique("layer")
    first = build_c_image(PROBE_C, "detectionjob.local/probe:base", tmp_path / "a", name="probe")
    second = write_scratch_image(tmp_path / "b.tar", "detectionjob.local/probe:rebuilt",
                                 {"probe": tmp_path / "a" / "probe"}, ["/probe"],
                                 more_layers=[{"rebuilt.txt": f"the new layer {marker}\n".encode()}])
    base_layer, new_layer = image_config(second)["rootfs"]["diff_ids"]
    assert image_config(first)["rootfs"]["diff_ids"] == [base_layer]
    assert node.import_image(first) == ["detectionjob.local/probe:base"]
    present = set(node.ctr("content", "ls", "-q").stdout.split())
    assert base_layer in present and new_layer not in present

    # What goes to containerd: the new layer, the config and the manifest; not the base layer.
    layout = io.BytesIO()
    write_oci_layout(second, layout, skip=present)
    layout.seek(0)
    with tarfile.open(fileobj=layout) as archive:
        blobs = {m.name.removeprefix("blobs/sha256/") for m in archive if m.name.startswith("blobs/")}
    assert len(blobs) == 3 and new_layer.removeprefix("sha256:") in blobs
    assert base_layer.removeprefix("sha256:") not in blobs

    name = unique("rebuilt")
    try:
        assert node.import_image(second) == ["detectionjob.local/probe:rebuilt"]
        node.ctr("images", "rm", "detectionjob.local/probe:base")
        apply(cluster, restricted_ns, pod(name, "detectionjob.local/probe:rebuilt"))
        wait_phase(cluster, restricted_ns, name, "Succeeded")
        logs = cluster.kube.kubectl("logs", "-n", restricted_ns, name).stdout
        assert "hello from the probe" in logs
    finally:
        cluster.kube.kubectl("delete", "pod", name, "-n", restricted_ns, "--wait=false", check=False)
        node.ctr("images", "rm", "detectionjob.local/probe:base", "detectionjob.local/probe:rebuilt",
                 check=False)


def test_restricted_pod_runs_and_logs(cluster: Cluster, probe_image: str, restricted_ns: str):
    apply(cluster, restricted_ns, pod("hello", probe_image))
    wait_phase(cluster, restricted_ns, "hello", "Succeeded")

    logs = cluster.kube.kubectl("logs", "-n", restricted_ns, "hello").stdout  # apiserver -> kubelet
    assert "hello from the probe: uid=1000 gid=1000" in logs
    status = json.loads(cluster.kube.kubectl("get", "pod", "hello", "-n", restricted_ns, "-o", "json").stdout)
    assert ipaddress.ip_address(status["status"]["podIP"]) in ipaddress.ip_network(cluster.node.pod_subnet)
    assert status["spec"]["nodeName"] == cluster.node.name  # bound by the real scheduler


def test_service_dns_from_pod_and_host(cluster: Cluster, probe_image: str, restricted_ns: str):
    ns = restricted_ns
    # A headless Service as KubeRay makes for a head: clusterIP None, not-ready addresses published.
    server = pod("dns-target", cluster.node.sandbox_image, labels={"app": "dns-target"})
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "dns-target"},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {"app": "dns-target"},
            "ports": [{"name": "http", "port": 8265}],
        },
    }
    apply(cluster, ns, server, service)
    wait_phase(cluster, ns, "dns-target", "Running")
    server_ip = phase_ip(cluster, ns, "dns-target")

    names = [f"dns-target.{ns}.svc.cluster.local", "dns-target", "kubernetes.default.svc.cluster.local"]
    args = [f"resolve:{n}" for n in names] + ["tcp:kubernetes.default:443"]  # kube-proxy: ClusterIP -> host
    apply(cluster, ns, pod("resolver", probe_image, args=args))
    wait_phase(cluster, ns, "resolver", "Succeeded")
    logs = cluster.kube.kubectl("logs", "-n", ns, "resolver").stdout
    assert f"dns-target.{ns}.svc.cluster.local {server_ip}" in logs, logs
    assert f"dns-target {server_ip}" in logs, logs  # the Pod's search path
    assert "kubernetes.default.svc.cluster.local 10.0.0.1" in logs, logs
    assert "tcp kubernetes.default:443 connected" in logs, logs

    # Host processes resolve cluster names through node.dns_wrapped (a private resolv.conf).
    argv = cluster.node.dns_wrapped(["getent", "ahostsv4", f"dns-target.{ns}"])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and server_ip in out.stdout, out
    host_resolv = Path("/etc/resolv.conf").read_text()
    assert cluster.node.host_ip not in host_resolv  # the host's own resolver is untouched


def _host_chains() -> list[str]:
    chains = []
    for save in ("iptables-save", "ip6tables-save"):
        out = subprocess.run([save], capture_output=True, text=True, check=True).stdout
        chains += [f"{save} {line}" for line in out.splitlines() if line.startswith((":KUBE-", ":CNI-"))]
    return chains


def test_stop_restores_the_host(cluster: Cluster, probe_image: str, restricted_ns: str):
    """Stop with a Pod running, check the host by other means than Node.leftovers, restart."""
    node = cluster.node
    apply(cluster, restricted_ns, pod("still-running", node.sandbox_image))
    wait_phase(cluster, restricted_ns, "still-running", "Running")
    assert _host_chains(), "a running node should have KUBE-/CNI- chains (the check would be vacuous)"
    assert Path(f"/sys/class/net/{BRIDGE}").exists()
    before = node.host_before
    assert before is not None

    node.stop()
    node.stop()  # idempotent
    try:
        assert node.teardown_errors == []
        assert _host_chains() == []
        assert not Path(f"/sys/class/net/{BRIDGE}").exists()
        assert kubepods_cgroups() == []
        assert {name: read_sysctl(name) for name in before.sysctls} == dict(before.sysctls)
        assert not Path("/var/log/pods").exists() or "/var/log/pods" in before.paths
        assert node.leftovers() == []
    finally:
        node.start()  # later tests in the session get their node back
    assert node.is_ready()
