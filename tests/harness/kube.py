"""A real, local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager.

By default there is no kubelet, scheduler or container runtime: Pods are stored
and admitted (Pod Security, ServiceAccount, RBAC ...) but never run. With
``node_mode=True`` the control plane is ready for :class:`harness.node.Node`
(the apiserver listens on every address and advertises the host IP, talks to
kubelets, and the controller-manager runs the controllers Pods, Services and
Jobs need).
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import yaml

from . import pki as _pki
from .binaries import binary
from .procs import ManagedProcess, free_port

#: Controllers run by kube-controller-manager. Garbage collection and namespace
#: deletion are what tests rely on; ``serviceaccount-controller`` creates the
#: ``default`` ServiceAccount that Pod admission requires, the root CA publisher
#: the ``kube-root-ca.crt`` ConfigMap projected into service-account volumes.
CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
)

#: Added in node mode: what running Pods, Services, Deployments and Jobs need.
#: ``node-lifecycle-controller`` removes the ``node.kubernetes.io/not-ready``
#: taint that admission puts on a new Node; ``taint-eviction-controller`` is left
#: out on purpose, so a kubelet that misses heartbeats on a loaded 2-core machine
#: never gets its Pods evicted.
NODE_CONTROLLERS = (
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "replicaset-controller",
    "deployment-controller",
    "statefulset-controller",
    "daemonset-controller",
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "pod-garbage-collector-controller",
    "disruption-controller",
    "node-lifecycle-controller",
    "persistentvolume-binder-controller",
)

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"


class CommandError(subprocess.CalledProcessError):
    """CalledProcessError whose message includes the command's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def _run(argv: Sequence[str], *, env=None, input=None, check=True, timeout=300, cwd=None):
    proc = subprocess.run(
        list(argv), input=input, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd
    )
    if check and proc.returncode != 0:
        raise CommandError(proc.returncode, proc.args, proc.stdout, proc.stderr)
    return proc


def default_route() -> tuple[str, str]:
    """``(interface, IPv4 address)`` of the interface that holds the default route."""
    routes = json.loads(_run(["ip", "-j", "-4", "route", "show", "default"]).stdout)
    if not routes:
        raise RuntimeError("this machine has no IPv4 default route: cannot choose a host IP")
    dev = routes[0]["dev"]
    links = json.loads(_run(["ip", "-j", "-4", "addr", "show", "dev", dev]).stdout)
    for link in links:
        for addr in link.get("addr_info", []):
            if addr.get("family") == "inet" and addr.get("scope") == "global":
                return dev, addr["local"]
    raise RuntimeError(f"the default-route interface {dev} has no global IPv4 address")


def host_ip() -> str:
    """The IPv4 address of the default-route interface (where Pods reach the host)."""
    return default_route()[1]


def _shm_tempdir(prefix: str) -> Path:
    """A temp dir in RAM where possible (etcd's data; fsync is off anyway)."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def write_kubeconfig(
    path: Path,
    server: str,
    ca_file: Path,
    user: str,
    *,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    token: str | None = None,
    namespace: str | None = None,
) -> Path:
    user_entry: dict = {}
    if client_cert:
        user_entry["client-certificate"] = str(client_cert)
        user_entry["client-key"] = str(client_key)
    if token:
        user_entry["token"] = token
    context = {"cluster": "detectionjob-test", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "detectionjob-test",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": user, "context": context}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


class KubeControlPlane:
    """The ``kube`` fixture's object. See :func:`harness.fixtures.kube`.

    Attributes:
        kubeconfig: admin kubeconfig (client certificate in ``system:masters``).
        server: the apiserver's ``https://127.0.0.1:PORT`` URL.
        log_dir: where each component's log file lives.
        ca_file: the cluster CA certificate.
        node_mode: whether the control plane can serve a :class:`harness.node.Node`.
        host_ip: in node mode, the address the apiserver advertises (else ``None``).
    """

    def __init__(self, workdir: Path, *, node_mode: bool = False) -> None:
        self.workdir = Path(workdir)
        self.node_mode = node_mode
        self.host_ip: str | None = host_ip() if node_mode else None
        self.log_dir = self.workdir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._processes: list[ManagedProcess] = []
        self._etcd_dir: Path | None = None
        self._sa_kubeconfigs = 0
        self.server = ""
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.helm_home = self.workdir / "helm"

    # ---- lifecycle ---------------------------------------------------------
    def start(self) -> KubeControlPlane:
        t0 = time.monotonic()
        # Resolve every binary first: fail fast, with the build hint.
        for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "helm"):
            binary(name)
        host_ips = (self.host_ip,) if self.host_ip else ()
        self.pki = _pki.generate(self.workdir / "pki", host_ips=host_ips, kubelet_client=self.node_mode)
        self.ca_file = self.pki.ca.cert
        self._start_etcd()
        self._start_apiserver()
        write_kubeconfig(
            self.kubeconfig,
            self.server,
            self.ca_file,
            "detectionjob-admin",
            client_cert=self.pki.admin.cert,
            client_key=self.pki.admin.key,
        )
        self._start_controller_manager()
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        for p in reversed(self._processes):
            p.stop()
        self._processes.clear()
        if self._etcd_dir:
            shutil.rmtree(self._etcd_dir, ignore_errors=True)
            self._etcd_dir = None

    def processes(self) -> list[ManagedProcess]:
        return list(self._processes)

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self._etcd_dir = _shm_tempdir("detectionjob-etcd-")
        self.etcd_url = f"http://127.0.0.1:{client}"
        p = ManagedProcess(
            "etcd",
            [
                binary("etcd"),
                f"--data-dir={self._etcd_dir / 'data'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            self.log_dir / "etcd.log",
        )
        self._processes.append(p)

        def healthy() -> bool:
            with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as r:
                return json.load(r).get("health") == "true"

        p.wait_until(healthy, 60, "etcd /health")

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.pki.admin.cert), str(self.pki.admin.key))
        return ctx

    def get(self, path: str, timeout: float = 5) -> tuple[int, str]:
        """Raw admin GET against the apiserver (e.g. ``/readyz?verbose``)."""
        req = urllib.request.Request(self.server + path)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ssl_context()) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def _network_args(self) -> list[str]:
        """Where the apiserver listens and what it publishes as the ``kubernetes`` Service."""
        if not self.node_mode:
            return [
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # 127.0.0.1 cannot be published as the kubernetes Service endpoint.
                "--endpoint-reconciler-type=none",
            ]
        assert self.pki.kubelet_client is not None
        return [
            # Pods reach the apiserver through the kubernetes Service -> host IP.
            "--bind-address=0.0.0.0",
            f"--advertise-address={self.host_ip}",
            "--endpoint-reconciler-type=lease",
            # kubectl logs/exec: apiserver -> kubelet, by IP (the node name does not resolve).
            f"--kubelet-client-certificate={self.pki.kubelet_client.cert}",
            f"--kubelet-client-key={self.pki.kubelet_client.key}",
            f"--kubelet-certificate-authority={self.pki.ca.cert}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def _start_apiserver(self) -> None:
        port = free_port()
        self.server = f"https://127.0.0.1:{port}"
        p = ManagedProcess(
            "kube-apiserver",
            [
                binary("kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                *self._network_args(),
                f"--secure-port={port}",
                f"--tls-cert-file={self.pki.apiserver.cert}",
                f"--tls-private-key-file={self.pki.apiserver.key}",
                f"--client-ca-file={self.pki.ca.cert}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={self.pki.sa_public_key}",
                f"--service-account-signing-key-file={self.pki.sa_private_key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",  # as on real clusters: Pod Security decides
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--cert-dir=" + str(self.workdir / "apiserver-certs"),
                "--v=1",
            ],
            self.log_dir / "kube-apiserver.log",
        )
        self._processes.append(p)
        p.wait_until(lambda: self.get("/readyz", timeout=2)[0] == 200, 180, "/readyz")

    def _start_controller_manager(self) -> None:
        port = free_port()
        p = ManagedProcess(
            "kube-controller-manager",
            [
                binary("kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--cert-dir=" + str(self.workdir / "kcm-certs"),
                "--controllers=" + ",".join(CONTROLLERS + (NODE_CONTROLLERS if self.node_mode else ())),
                "--use-service-account-credentials=false",
                "--leader-elect=false",
                f"--root-ca-file={self.ca_file}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--v=1",
            ],
            self.log_dir / "kube-controller-manager.log",
        )
        self._processes.append(p)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # its self-signed serving cert

        def healthy() -> bool:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", timeout=2, context=ctx) as r:
                return r.status == 200

        p.wait_until(healthy, 120, "kube-controller-manager /healthz")
        # The default ServiceAccount appearing proves the controllers really run.
        p.wait_until(
            lambda: (
                self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0
            ),
            60,
            "the default ServiceAccount (serviceaccount controller)",
            interval=0.5,
        )

    # ---- API used by tests -------------------------------------------------
    def bin(self, name: str) -> Path:
        """Path of a built program: kube-apiserver, kubectl, helm, minio, etcd, ..."""
        return binary(name)

    def api_client(self):
        """A new ``kubernetes.client.ApiClient`` authenticated as the admin."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        """Run ``kubectl --kubeconfig=<admin> ARGS`` (text mode, output captured)."""
        argv = [str(binary("kubectl")), f"--kubeconfig={self.kubeconfig}", *map(str, args)]
        return _run(argv, input=input, check=check, timeout=timeout)

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run ``helm ARGS`` against the apiserver (admin), with a private helm home."""
        env = dict(os.environ)
        env.update(
            KUBECONFIG=str(self.kubeconfig),
            HELM_CONFIG_HOME=str(self.helm_home / "config"),
            HELM_CACHE_HOME=str(self.helm_home / "cache"),
            HELM_DATA_HOME=str(self.helm_home / "data"),
        )
        return _run([str(binary("helm")), *map(str, args)], env=env, check=check, timeout=timeout)

    def create_namespace(self, name: str, labels: dict[str, str] | None = None):
        """Create a Namespace (or update the labels of an existing one); returns it."""
        from kubernetes import client

        core = client.CoreV1Api(self.api_client())
        body = client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels or None))
        try:
            return core.create_namespace(body)
        except client.ApiException as e:
            if e.status != 409:
                raise
            if labels:
                return core.patch_namespace(name, {"metadata": {"labels": labels}})
            return core.read_namespace(name)

    def serviceaccount_kubeconfig(
        self,
        namespace: str,
        name: str,
        *,
        create: bool = True,
        expiration_seconds: int = 24 * 3600,
    ) -> Path:
        """A kubeconfig that authenticates as ServiceAccount ``namespace/name``.

        The token is issued by the apiserver through the TokenRequest API
        (``serviceaccounts/token``), exactly as for a Pod. The ServiceAccount is
        created first when it does not exist (``create=False`` to require it).
        The kubeconfig's default namespace is ``namespace``.
        """
        from kubernetes import client

        core = client.CoreV1Api(self.api_client())
        if create:
            try:
                core.create_namespaced_service_account(
                    namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
                )
            except client.ApiException as e:
                if e.status != 409:
                    raise
        tr = core.create_namespaced_service_account_token(
            name,
            namespace,
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(
                    audiences=[SERVICE_ACCOUNT_ISSUER], expiration_seconds=expiration_seconds
                )
            ),
        )
        self._sa_kubeconfigs += 1
        path = self.workdir / f"sa-{namespace}-{name}-{self._sa_kubeconfigs}.kubeconfig"
        return write_kubeconfig(
            path,
            self.server,
            self.ca_file,
            f"system:serviceaccount:{namespace}:{name}",
            token=tr.status.token,
            namespace=namespace,
        )
