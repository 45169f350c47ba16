"""A real node for the test cluster: containerd, kubelet, kube-scheduler, kube-proxy and CoreDNS.

Every component is a host process (as in Kubernetes' ``hack/local-up-cluster.sh``)
next to a :class:`~harness.kube.KubeControlPlane` started with ``node_mode=True``.
Pods really run: containerd 1.6 + runc from Debian, a CNI bridge ``cni0`` with
host-local IPAM, kube-proxy in iptables mode and CoreDNS on the host IP (the
kubelet's ``clusterDNS``). See hack/README.md ("Node") for why each setting is
what it is on these machines.

What survives a run: only containerd's root (images and their unpacked
snapshots) under the binary cache, so multi-GB images are imported once, and the
pause image tar. Everything else lives in a per-run directory, and
:meth:`Node.stop` puts the host back as it found it (iptables chains, ``cni0``,
cgroups, mounts, sysctls, host directories); :meth:`Node.leftovers` lists what
would still differ.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import hashlib
import io
import ipaddress
import json
import os
import platform
import re
import shlex
import shutil
import signal
import ssl
import stat
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import yaml

from . import pki as _pki
from .binaries import REPO_ROOT, binary
from .kube import CommandError, KubeControlPlane, _run, default_route, write_kubeconfig
from .oci_layout import normalized_name, write_oci_layout
from .procs import HarnessError, ManagedProcess, free_port

NODE_NAME = "detectionjob-node"
#: The CNI bridge's subnet (kube-proxy's ``clusterCIDR``); must not overlap a host route.
POD_SUBNET = "10.244.0.0/24"
CLUSTER_DOMAIN = "cluster.local"
BRIDGE = "cni0"
CACHE_ROOT = Path(os.environ.get("DETECTIONJOB_BIN_CACHE", Path.home() / ".cache" / "detectionjob"))
#: containerd's root: content store, metadata and unpacked snapshots, kept between runs.
CONTAINERD_ROOT = CACHE_ROOT / "containerd-root"
CNI_BIN_DIR = Path("/usr/lib/cni")
K8S_NAMESPACE = "k8s.io"  # containerd namespace of the CRI plugin
#: Per-run directories in the temp dir (short: containerd's socket lives there).
RUN_DIR_PREFIX = "dj-node-"

#: Host sysctls the kubelet or kube-proxy may change; restored on stop (those that exist).
SYSCTLS = (
    "kernel.panic",
    "kernel.panic_on_oops",
    "vm.overcommit_memory",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.netfilter.nf_conntrack_max",
)
#: Host directories a node may create outside its own; removed on stop if they were absent.
#: The kubelet hard-codes /var/lib/kubelet/device-plugins and /var/log/containers, libcni
#: caches results in /var/lib/cni, containerd's shims put their sockets in /run/containerd/s.
HOST_PATHS = (
    "/var/log/pods",
    "/var/log/containers",
    "/var/lib/cni",
    "/var/lib/kubelet",
    "/run/containerd",
    "/run/netns",
    "/etc/cni",
    "/opt/cni",
    "/opt/containerd",
    "/etc/kubernetes",
    "/var/run/kubernetes",
)
#: Shared with other containerd instances (another one may be running, e.g. dockerd's):
#: only their empty directories are removed.
SHARED_HOST_PATHS = ("/run/containerd", "/run/netns", "/opt/containerd")
IPTABLES_TABLES = ("filter", "nat", "mangle", "raw", "security")
CHAIN_PREFIXES = ("KUBE-", "CNI-")
REQUIRED_PROGRAMS = (
    "containerd",
    "ctr",
    "runc",
    "iptables",
    "ip6tables",
    "conntrack",
    "unshare",
    "mount",
    "ip",
)


# ---- images -------------------------------------------------------------------------------------
def kubernetes_version() -> str:
    """The k8s.io/kubernetes version the ``hack/kube`` wrapper pins (e.g. ``v1.37.2``)."""
    go_mod = (REPO_ROOT / "hack" / "kube" / "go.mod").read_text()
    m = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", go_mod, re.M)
    if not m:
        raise HarnessError("hack/kube/go.mod does not require k8s.io/kubernetes")
    return m.group(1)


def kubernetes_module_dir() -> Path:
    """The k8s.io/kubernetes module in the Go module cache (downloaded if missing)."""
    env = dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="-mod=readonly")
    env["PATH"] = env.get("PATH", "") + ":/usr/local/go/bin"
    proc = _run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{kubernetes_version()}"],
        env=env,
        cwd=REPO_ROOT / "hack" / "kube",
    )
    return Path(json.loads(proc.stdout)["Dir"])


def compile_static(source: Path, out: Path, *cflags: str) -> Path:
    """``gcc -static`` one C file (the images below have nothing but that program)."""
    if not shutil.which("gcc"):
        raise HarnessError("gcc is needed to build the node's images (apt-get install gcc)")
    _run(["gcc", "-Os", "-Wall", "-static", *cflags, "-o", str(out), str(source)])
    return out


def _tar_bytes(members: Mapping[str, bytes], mode: int = 0o644) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_scratch_image(
    tar_path: Path, ref: str, files: Mapping[str, Path], entrypoint: Sequence[str],
    more_layers: Sequence[Mapping[str, bytes]] = (),
) -> Path:
    """Write a ``FROM scratch`` image as a ``docker save`` tar (``ctr import`` reads it).

    ``files`` maps a path in the image (``"pause"``) to a host file; all are mode 0755, uid 0: the
    first layer. Each of ``more_layers`` (path in the image -> contents) is one more layer on top.
    """
    layers = [_tar_bytes({name: Path(src).read_bytes() for name, src in files.items()}, mode=0o755)]
    layers += [_tar_bytes(dict(layer)) for layer in more_layers]
    diff_ids = [hashlib.sha256(layer).hexdigest() for layer in layers]
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": {"Entrypoint": list(entrypoint), "Env": ["PATH=/"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
            "history": [
                {"created": "1970-01-01T00:00:00Z", "created_by": "harness.node.write_scratch_image"}
            ] * len(layers),
        },
        sort_keys=True,
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": [f"{d}/layer.tar" for d in diff_ids]}]
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tar_path.with_name(tar_path.name + ".tmp")
    tmp.write_bytes(
        _tar_bytes(
            {
                config_name: config,
                **{f"{d}/layer.tar": layer for d, layer in zip(diff_ids, layers, strict=True)},
                "manifest.json": json.dumps(manifest).encode(),
            }
        )
    )
    tmp.rename(tar_path)
    return tar_path


def build_c_image(
    source: str | Path, ref: str, workdir: Path, name: str = "main",
    more_layers: Sequence[Mapping[str, bytes]] = (),
) -> Path:
    """Compile a C program statically into a ``FROM scratch`` image tar; returns the tar's path.

    ``source`` is C code or the path of a ``.c`` file; the program is ``/<name>``, the entrypoint,
    alone in the first layer; ``more_layers`` as for :func:`write_scratch_image`.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    if isinstance(source, str) and "\n" in source:
        src = workdir / f"{name}.c"
        src.write_text(source)
    else:
        src = Path(source)
    program = compile_static(src, workdir / name)
    return write_scratch_image(workdir / f"{name}.tar", ref, {name: program}, [f"/{name}"], more_layers)


def pause_image(cache_root: Path = CACHE_ROOT) -> tuple[Path, str]:
    """``(tar, ref)`` of the sandbox image: Kubernetes' own pause.c, cached per Kubernetes version."""
    version = kubernetes_version()
    ref = f"detectionjob.local/pause:{version}"
    tar = cache_root / f"pause-{version}" / "pause.tar"
    if tar.exists():
        return tar, ref
    build = Path(tempfile.mkdtemp(prefix="pause-build-"))
    try:
        src = kubernetes_module_dir() / "build" / "pause" / "linux" / "pause.c"
        program = compile_static(src, build / "pause", f"-DVERSION=detectionjob-k8s-{version}")
        write_scratch_image(tar, ref, {"pause": program}, ["/pause"])
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return tar, ref


# ---- host state ---------------------------------------------------------------------------------
def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctl(name: str) -> str | None:
    try:
        return _sysctl_path(name).read_text().strip()
    except OSError:
        return None


def write_sysctl(name: str, value: str) -> None:
    _sysctl_path(name).write_text(value + "\n")


def _unescape_mount(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def mounts() -> list[tuple[str, str]]:
    """``(mount point, fs type)`` of every mount, from /proc/self/mountinfo, in mount order."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        out.append((_unescape_mount(left.split()[4]), right.split()[0]))
    return out


def _under(path: str, dirs: Sequence[Path]) -> bool:
    return any(path == str(d) or path.startswith(str(d).rstrip("/") + "/") for d in dirs)


def mounts_under(dirs: Sequence[Path]) -> list[str]:
    return [m for m, _ in mounts() if _under(m, dirs)]


def unmount_under(dirs: Sequence[Path], passes: int = 10) -> list[str]:
    """Unmount every mount under ``dirs`` (deepest first, lazily if busy); returns what remains."""
    libc = ctypes.CDLL(None, use_errno=True)
    for _ in range(passes):
        remaining = mounts_under(dirs)
        if not remaining:
            return []
        for m in sorted(remaining, key=lambda p: p.count("/"), reverse=True):
            if libc.umount2(m.encode(), 0) != 0:
                libc.umount2(m.encode(), 2)  # MNT_DETACH
    return mounts_under(dirs)


def cgroup_roots() -> list[Path]:
    """Mount points of the cgroup v1 hierarchies and of cgroup2."""
    return [Path(m) for m, fs in mounts() if fs in ("cgroup", "cgroup2")]


def kubepods_cgroups() -> list[Path]:
    return [root / "kubepods" for root in cgroup_roots() if (root / "kubepods").is_dir()]


def remove_cgroup_tree(top: Path, timeout: float = 10) -> None:
    """rmdir a cgroup and its children, deepest first (retrying while they drain)."""
    deadline = time.monotonic() + timeout
    while top.exists():
        for dirpath, _, _ in os.walk(top, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
        if not top.exists() or time.monotonic() > deadline:
            return
        time.sleep(0.2)


def _iptables_rules(cmd: str, table: str) -> list[list[str]]:
    proc = _run([cmd, "-w", "-t", table, "-S"], check=False, timeout=60)
    return [shlex.split(line) for line in proc.stdout.splitlines()] if proc.returncode == 0 else []


def _ours(chain: str) -> bool:
    return chain.startswith(CHAIN_PREFIXES)


def _jump_target(rule: list[str]) -> str | None:
    for flag in ("-j", "-g"):
        if flag in rule[:-1]:
            return rule[rule.index(flag) + 1]
    return None


def iptables_commands() -> list[str]:
    """iptables front ends in use: nft-based iptables/ip6tables, and legacy ones if loaded."""
    cmds = ["iptables", "ip6tables"]
    legacy = {
        "iptables-legacy": "/proc/net/ip_tables_names",
        "ip6tables-legacy": "/proc/net/ip6_tables_names",
    }
    cmds += [c for c, proc in legacy.items() if shutil.which(c) and Path(proc).exists()]
    return cmds


def our_chains() -> list[str]:
    """``"<cmd> <table> <chain>"`` for every KUBE-* and CNI-* chain on the host."""
    found = []
    for cmd in iptables_commands():
        for table in IPTABLES_TABLES:
            rules = _iptables_rules(cmd, table)
            found += [f"{cmd} {table} {r[1]}" for r in rules if r[:1] == ["-N"] and _ours(r[1])]
    return found


def remove_our_chains() -> None:
    """Delete the jumps into KUBE-*/CNI-* chains, then flush and delete those chains."""
    for cmd in iptables_commands():
        for table in IPTABLES_TABLES:
            rules = _iptables_rules(cmd, table)
            chains = [r[1] for r in rules if r[:1] == ["-N"] and _ours(r[1])]
            for r in rules:
                target = _jump_target(r)
                if r[:1] == ["-A"] and not _ours(r[1]) and target and _ours(target):
                    _run([cmd, "-w", "-t", table, "-D", *r[1:]], check=False)
            for op in ("-F", "-X"):
                for chain in chains:
                    _run([cmd, "-w", "-t", table, op, chain], check=False)


def links() -> dict[str, dict]:
    return {link["ifname"]: link for link in json.loads(_run(["ip", "-j", "link", "show"]).stdout)}


def netns_names() -> set[str]:
    d = Path("/run/netns")
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


def processes_mentioning(needle: str) -> list[int]:
    """Pids whose command line contains ``needle`` (containerd shims name their containerd's socket)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return [p for p in pids if p != os.getpid()]


@dataclass(frozen=True)
class HostSnapshot:
    """What :meth:`Node.stop` restores and :meth:`Node.leftovers` compares against."""

    sysctls: Mapping[str, str]
    paths: frozenset[str]
    links: frozenset[str]
    netns: frozenset[str]

    @classmethod
    def take(cls) -> HostSnapshot:
        values = {name: read_sysctl(name) for name in SYSCTLS}
        return cls(
            sysctls={k: v for k, v in values.items() if v is not None},
            paths=frozenset(p for p in HOST_PATHS if os.path.lexists(p)),
            links=frozenset(links()),
            netns=frozenset(netns_names()),
        )

    def save(self, path: Path) -> None:
        """Kept in the run directory, so a later run can undo a run that was killed."""
        fields = {
            "sysctls": dict(self.sysctls),
            "paths": sorted(self.paths),
            "links": sorted(self.links),
            "netns": sorted(self.netns),
        }
        path.write_text(json.dumps(fields, indent=1))

    @classmethod
    def load(cls, path: Path) -> HostSnapshot:
        d = json.loads(path.read_text())
        return cls(d["sysctls"], frozenset(d["paths"]), frozenset(d["links"]), frozenset(d["netns"]))


def _safe_rmtree(path: Path) -> bool:
    """rmtree unless something is still mounted below ``path`` (never delete through a mount)."""
    if not os.path.lexists(path):
        return True
    if mounts_under([path]):
        return False
    shutil.rmtree(path, ignore_errors=True)
    return not os.path.lexists(path)


def _listening_sockets() -> set[str]:
    lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    return {fields[-1] for fields in map(str.split, lines) if len(fields) == 8}


def _remove_empty_dirs(path: Path) -> bool:
    """rmdir ``path`` and the directories below it that are empty, after deleting dead sockets
    (a killed shim leaves its socket in /run/containerd/s); other files are left alone."""
    live = _listening_sockets()
    for dirpath, _, files in os.walk(path, topdown=False):
        for name in files:
            f = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.lstat(f).st_mode) and f not in live:
                    os.unlink(f)
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)
    return not os.path.lexists(path)


def kubepods_pids() -> set[int]:
    """Processes in the kubelet's cgroups (containers; only left over by a killed run)."""
    pids: set[int] = set()
    for top in kubepods_cgroups():
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(x) for x in procs.read_text().split())
    return pids


def restore_host(before: HostSnapshot, dirs: Sequence[Path]) -> list[str]:
    """Undo what a node did to the host; ``dirs`` are its own (their mounts go). Returns problems.

    Mounts under ``dirs``, network namespaces, KUBE-*/CNI-* iptables chains, the bridge and its
    veths, /kubepods cgroups, host directories that were absent, and the sysctls in ``before``.
    """
    problems = [f"still mounted: {m}" for m in unmount_under(dirs)]
    for ns in netns_names() - before.netns:
        _run(["ip", "netns", "delete", ns], check=False)
    remove_our_chains()
    current = links()
    for name, link in current.items():
        if link.get("master") == BRIDGE and name not in before.links:
            _run(["ip", "link", "delete", name], check=False)
    if BRIDGE in current and BRIDGE not in before.links:
        _run(["ip", "link", "delete", BRIDGE], check=False)
    for cg in kubepods_cgroups():
        remove_cgroup_tree(cg)
    problems += [f"cgroup not removed: {cg}" for cg in kubepods_cgroups()]
    for path in HOST_PATHS:
        if path in before.paths:
            continue
        remove = _remove_empty_dirs if path in SHARED_HOST_PATHS else _safe_rmtree
        if not remove(Path(path)):
            problems.append(f"not removed (not empty, or mounts below): {path}")
    for name, value in before.sysctls.items():
        if read_sysctl(name) != value:
            write_sysctl(name, value)
    return problems


def recover_killed_runs(tmp: Path | None = None) -> list[str]:
    """Undo nodes whose harness was killed (SIGKILL skips every cleanup): what was found.

    Their run directories (``/tmp/dj-node-*``) hold the socket their shims name and the host
    snapshot taken before they started. Call only while holding the node lock.
    """
    stale = sorted(Path(tmp or tempfile.gettempdir()).glob(f"{RUN_DIR_PREFIX}*"))
    if not stale:
        return []
    for pid in kubepods_pids():  # container processes outlive their killed shims
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for d in stale:
        for pid in processes_mentioning(str(d / "containerd.sock")):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    found = [str(d) for d in stale]
    for d in stale:
        snapshot = d / "host-before.json"
        if snapshot.exists():
            before = HostSnapshot.load(snapshot)
        else:  # killed before it saved one: the bridge is its, the original sysctls are unknown
            now = HostSnapshot.take()
            before = HostSnapshot(now.sysctls, now.paths, now.links - {BRIDGE}, now.netns)
        found += restore_host(before, [d])
        _safe_rmtree(d)
    return found


class _NodeLock:
    """One node per machine: cni0, the KUBE-* chains, port 53 on the host IP, /kubepods and
    containerd's cached root are all machine-wide."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise HarnessError(
                f"another test node is running on this machine (it holds {self.path})"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# ---- configuration files ------------------------------------------------------------------------
def _toml_str(value: object) -> str:
    return json.dumps(str(value))


def containerd_config(
    root: Path, state: Path, socket_path: Path, cni_conf_dir: Path, sandbox_image: str
) -> str:
    """containerd 1.6 config: own root/state/socket, CRI with runc + cgroupfs and our CNI dir."""
    runc = shutil.which("runc") or "runc"
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = {_toml_str(root)}
state = {_toml_str(state)}
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = {_toml_str(socket_path)}
[ttrpc]
  address = {_toml_str(str(socket_path) + ".ttrpc")}
[debug]
  level = "info"
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = {_toml_str(state / "opt")}

[{cri}]
  sandbox_image = {_toml_str(sandbox_image)}
  # No CAP_SYS_RESOURCE in this machine's bounding set: oom_score_adj < 0 fails every sandbox.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        BinaryName = {_toml_str(runc)}
        Root = {_toml_str(state / "runc")}
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = {_toml_str(CNI_BIN_DIR)}
    conf_dir = {_toml_str(cni_conf_dir)}
    max_conf_num = 1
"""


def cni_config(pod_subnet: str, mtu: int, ipam_dir: Path) -> dict:
    """The bridge network: ``cni0`` (gateway, masquerade, hairpin), host-local IPAM, portmap."""
    return {
        "cniVersion": "1.0.0",
        "name": "detectionjob",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "mtu": mtu,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def corefile(host_ip: str, kubeconfig: Path, health_port: int, ready_port: int) -> str:
    """CoreDNS on the host IP: cluster.local from the apiserver, the rest to the host's resolver."""
    return f""".:53 {{
    bind {host_ip}
    errors
    health 127.0.0.1:{health_port}
    ready 127.0.0.1:{ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    forward . /etc/resolv.conf
    cache 5
}}
"""


# ---- the node -----------------------------------------------------------------------------------
@dataclass
class _Ports:
    kubelet: int
    kubelet_healthz: int
    scheduler: int
    proxy_healthz: int
    proxy_metrics: int
    dns_health: int
    dns_ready: int

    @classmethod
    def pick(cls) -> _Ports:
        return cls(*(free_port() for _ in range(7)))


def _insecure_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # components' self-signed serving certs
    return ctx


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(
        url, timeout=2, context=_insecure_ctx() if url.startswith("https") else None
    ) as r:
        return r.status == 200


class Node:
    """The ``node`` fixture's object: one Kubernetes node whose Pods really run.

    Attributes:
        name: the Node's name (also kubelet's and kube-proxy's hostname override).
        host_ip: the default-route interface's IPv4 (node InternalIP, CoreDNS, apiserver endpoint).
        pod_subnet: the CNI bridge's subnet.
        containerd_address: containerd's socket (``ctr --address``; CRI for the kubelet).
        resolv_conf: a resolv.conf that points at CoreDNS with the cluster search path.
        log_dir: each component's log, plus ``pods/`` (the kubelet's pod logs).
        sandbox_image: the pause image's name (also usable as a do-nothing container).
        host_before: :class:`HostSnapshot` taken before the node changed anything.
    """

    def __init__(
        self,
        kube: KubeControlPlane,
        workdir: Path,
        *,
        name: str = NODE_NAME,
        pod_subnet: str = POD_SUBNET,
        containerd_root: Path = CONTAINERD_ROOT,
    ) -> None:
        if not kube.node_mode or not kube.host_ip:
            raise HarnessError("Node needs a KubeControlPlane started with node_mode=True")
        self.kube = kube
        self.workdir = Path(workdir)
        self.name = name
        self.pod_subnet = pod_subnet
        self.host_ip: str = kube.host_ip
        self.interface, _ = default_route()
        self.containerd_root = Path(containerd_root)
        self.log_dir = self.workdir / "logs"
        self.resolv_conf = self.workdir / "resolv.conf"
        self.run_dir: Path | None = None
        self.containerd_address = ""
        self.host_before: HostSnapshot | None = None
        self.sandbox_image = ""
        self.teardown_errors: list[str] = []
        self.timings: dict[str, float] = {}
        self.startup_seconds = self.teardown_seconds = 0.0
        self._processes: dict[str, ManagedProcess] = {}
        self._lock = _NodeLock(Path(tempfile.gettempdir()) / "dj-node.lock")
        self._running = False
        atexit.register(self.stop)

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Node:
        """Start containerd, kubelet, kube-scheduler, kube-proxy and CoreDNS; wait for Ready."""
        t0 = time.monotonic()
        self.timings = {}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._check_prerequisites()
        self._lock.acquire()
        self._running = True
        recovered = recover_killed_runs()
        if recovered:
            with open(self.log_dir / "recovered.log", "a") as f:
                f.write("undid a killed earlier run: " + "; ".join(recovered) + "\n")
        self._check_pod_subnet()
        self.host_before = HostSnapshot.take()
        self._prepare_run_dir()
        write_sysctl("net.ipv4.ip_forward", "1")
        for label, step in (
            ("containerd", self._start_containerd),
            ("kubelet", self._start_kubelet),
            ("kube-scheduler", self._start_scheduler),
            ("kube-proxy", self._start_proxy),
            ("coredns", self._start_coredns),
            ("ready", self.wait_ready),
        ):
            t = time.monotonic()
            step()
            self.timings[f"start {label}"] = round(time.monotonic() - t, 2)
        self.startup_seconds = time.monotonic() - t0
        self._log_timings("start", self.startup_seconds)
        return self

    def stop(self) -> None:
        """Stop everything and put the host back as it was. Idempotent; never raises.

        Problems are kept in :attr:`teardown_errors`; :meth:`leftovers` says what still differs.
        """
        if not self._running:
            return
        t0 = time.monotonic()
        self.teardown_errors = []
        for label, step in (
            ("stop kube-scheduler", lambda: self._stop("kube-scheduler")),  # no new Pods get bound
            ("delete pods", self._delete_pods),
            ("stop coredns", lambda: self._stop("coredns")),
            ("stop kube-proxy", lambda: self._stop("kube-proxy")),
            ("kube-proxy --cleanup", self._proxy_cleanup),
            ("stop kubelet", lambda: self._stop("kubelet")),
            ("remove containers", self._remove_containers),
            ("stop containerd", lambda: self._stop("containerd")),
            ("kill shims", self._kill_shims),
            ("clean host", self._clean_host),
        ):
            t = time.monotonic()
            try:
                step()
            except Exception as e:  # noqa: BLE001 - finish the teardown, report at the end
                self.teardown_errors.append(f"{label}: {e}")
            self.timings[label] = round(time.monotonic() - t, 2)
        self._running = False
        self._lock.release()
        self.teardown_seconds = time.monotonic() - t0
        self._log_timings("stop", self.teardown_seconds)

    def _log_timings(self, what: str, total: float) -> None:
        """Append the step durations (and teardown errors) to ``log_dir/node-timings.log``."""
        with open(self.log_dir / "node-timings.log", "a") as f:
            f.write(f"{what}: {total:.1f}s {json.dumps(self.timings)}\n")
            f.writelines(f"teardown error: {e}\n" for e in self.teardown_errors)

    def processes(self) -> list[ManagedProcess]:
        return list(self._processes.values())

    def _check_prerequisites(self) -> None:
        if os.geteuid() != 0:
            raise HarnessError("the test node needs root (containerd, iptables, mounts, cgroups)")
        missing = [p for p in REQUIRED_PROGRAMS if not shutil.which(p)]
        missing += [
            str(CNI_BIN_DIR / p)
            for p in ("bridge", "host-local", "loopback", "portmap")
            if not (CNI_BIN_DIR / p).exists()
        ]
        if missing:
            raise HarnessError(f"missing {', '.join(missing)}: run `bash hack/install-node.sh`")
        for name in ("kubelet", "kube-scheduler", "kube-proxy", "coredns"):
            binary(name)

    def _check_pod_subnet(self) -> None:
        subnet = ipaddress.ip_network(self.pod_subnet)
        for route in json.loads(_run(["ip", "-j", "-4", "route"]).stdout):
            dst = route.get("dst", "default")
            if dst != "default" and ipaddress.ip_network(dst, strict=False).overlaps(subnet):
                raise HarnessError(f"pod subnet {subnet} overlaps the host route {dst}")

    def _prepare_run_dir(self) -> None:
        # Short, per run: containerd's socket path must fit in sockaddr_un.
        self.run_dir = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX))
        assert self.host_before
        self.host_before.save(self.run_dir / "host-before.json")
        self.containerd_root.mkdir(parents=True, exist_ok=True)
        self.containerd_address = str(self.run_dir / "containerd.sock")
        self.certs = self.run_dir / "pki"
        self.ports = _Ports.pick()
        ca = self.kube.pki
        self.kubelet_client = _pki.issue(
            ca, self.certs, "kubelet-client", f"system:node:{self.name}", ("system:nodes",)
        )
        self.kubelet_serving = _pki.issue(
            ca,
            self.certs,
            "kubelet-serving",
            f"system:node:{self.name}",
            server=True,
            dns=(self.name,),
            ips=(self.host_ip,),
        )
        self.kubelet_kubeconfig = write_kubeconfig(
            self.run_dir / "kubelet.kubeconfig",
            self.kube.server,
            self.kube.ca_file,
            f"system:node:{self.name}",
            client_cert=self.kubelet_client.cert,
            client_key=self.kubelet_client.key,
        )
        self.resolv_conf.write_text(
            f"nameserver {self.host_ip}\n"
            f"search default.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\n"
            "options ndots:5\n"
        )

    def _spawn(self, name: str, argv: Sequence[str | os.PathLike]) -> ManagedProcess:
        p = ManagedProcess(name, argv, self.log_dir / f"{name}.log")
        self._processes[name] = p
        return p

    def _stop(self, name: str) -> None:
        p = self._processes.pop(name, None)
        if p:
            p.stop(grace=15)

    # ---- containerd ---------------------------------------------------------------------------
    def ctr(self, *args: str, input: bytes | None = None, check: bool = True, timeout: float = 120):
        """Run ``ctr --address <ours> --namespace k8s.io ARGS`` (bytes in, text out)."""
        argv = ["ctr", "--address", self.containerd_address, "--namespace", K8S_NAMESPACE, *args]
        proc = subprocess.run(argv, input=input, capture_output=True, timeout=timeout, check=False)
        out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        if check and proc.returncode != 0:
            raise CommandError(proc.returncode, argv, out, err)
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def _start_containerd(self) -> None:
        assert self.run_dir
        state = self.run_dir / "containerd-state"
        cni_conf = self.run_dir / "cni" / "net.d"
        cni_conf.mkdir(parents=True)
        mtu = int(Path(f"/sys/class/net/{self.interface}/mtu").read_text())
        (cni_conf / "10-detectionjob.conflist").write_text(
            json.dumps(cni_config(self.pod_subnet, mtu, self.run_dir / "cni" / "ipam"), indent=2)
        )
        pause_tar, self.sandbox_image = pause_image()
        config = self.run_dir / "containerd.toml"
        config.write_text(
            containerd_config(
                self.containerd_root, state, Path(self.containerd_address), cni_conf, self.sandbox_image
            )
        )
        p = self._spawn("containerd", ["containerd", "--config", config])

        def cri_ok() -> bool:
            plugins = self.ctr("plugins", "ls", check=False, timeout=10).stdout
            return bool(re.search(r"io\.containerd\.grpc\.v1\s+cri\s+\S+\s+ok", plugins))

        p.wait_until(cri_ok, 60, "containerd with its CRI plugin")
        self._remove_containers()  # stale ones a crashed run left in the cached root
        self.import_image(pause_tar)

    def has_image(self, ref: str) -> bool:
        """Whether ``ref`` (``name:tag``, normalised as the kubelet does) is in the CRI's images.

        containerd's root is cached between runs, so an image imported once stays available.
        """
        out = self.ctr("images", "ls", "-q", check=False).stdout
        text = out.decode(errors="replace") if isinstance(out, bytes) else out
        return normalized_name(ref) in text.split()

    def import_image(self, source: str | os.PathLike | IO[bytes] | bytes, timeout: float = 3600) -> list[str]:
        """Import a ``docker save`` (or OCI) tar into the CRI's namespace; returns the image names.

        ``source`` is a path, bytes, or a binary stream such as ``docker save``'s stdout. A
        ``docker save`` tar given by path goes in as an OCI layout without the layers containerd
        already has (see :mod:`harness.oci_layout`): a rebuilt image costs its new layers only.
        Pods then use the image with ``imagePullPolicy: Never`` or ``IfNotPresent``.
        """
        argv = ["ctr", "--address", self.containerd_address, "--namespace", K8S_NAMESPACE, "images", "import"]
        if isinstance(source, (str, os.PathLike)) and _is_docker_save(Path(source)):
            proc = self._import_new_layers(argv, Path(source), timeout)
        elif isinstance(source, (str, os.PathLike)):
            proc = subprocess.run(
                [*argv, os.fspath(source)], capture_output=True, timeout=timeout, check=False
            )
        elif isinstance(source, bytes):
            proc = subprocess.run(
                [*argv, "-"], input=source, capture_output=True, timeout=timeout, check=False
            )
        else:
            proc = self._import_stream(argv, source, timeout)
        out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        if proc.returncode != 0:
            raise CommandError(proc.returncode, argv, out, err)
        return re.findall(r"^unpacking (\S+) \(", out, re.M)

    def _import_new_layers(self, argv: list[str], saved: Path, timeout: float) -> subprocess.CompletedProcess:
        present = set(self.ctr("content", "ls", "-q", timeout=60).stdout.split())
        read_end, write_end = os.pipe()
        failed: list[BaseException] = []

        def feed() -> None:
            with open(write_end, "wb") as pipe:
                try:
                    write_oci_layout(saved, pipe, skip=present)
                except BaseException as exc:  # noqa: BLE001 - reported below
                    failed.append(exc)

        with subprocess.Popen([*argv, "-"], stdin=read_end, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) as proc:
            os.close(read_end)
            writer = threading.Thread(target=feed, daemon=True)
            writer.start()
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
            writer.join()
        if failed and proc.returncode == 0:
            raise failed[0]
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    @staticmethod
    def _import_stream(argv: list[str], stream: IO[bytes], timeout: float) -> subprocess.CompletedProcess:
        try:
            stream.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            with tempfile.TemporaryFile() as buf:  # a stream without a file descriptor
                shutil.copyfileobj(stream, buf)
                buf.seek(0)
                return subprocess.run(
                    [*argv, "-"], stdin=buf, capture_output=True, timeout=timeout, check=False
                )
        return subprocess.run([*argv, "-"], stdin=stream, capture_output=True, timeout=timeout, check=False)

    def _remove_containers(self) -> None:
        """Kill and delete every task and container in containerd's CRI namespace."""
        if not self.containerd_address or not Path(self.containerd_address).exists():
            return
        for task in self.ctr("tasks", "ls", "-q", check=False, timeout=30).stdout.split():
            self.ctr("tasks", "kill", "--all", "--signal", "SIGKILL", task, check=False, timeout=30)
            self.ctr("tasks", "delete", "--force", task, check=False, timeout=60)
        containers = self.ctr("containers", "ls", "-q", check=False, timeout=30).stdout.split()
        if containers:
            self.ctr("containers", "delete", *containers, check=False, timeout=120)

    def _kill_shims(self) -> None:
        """containerd's shims leave containerd's process group: end ours by pid."""
        if not self.containerd_address:
            return
        for pid in processes_mentioning(self.containerd_address):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # ---- kubelet, scheduler, proxy, DNS -------------------------------------------------------
    def _kubelet_config(self) -> dict:
        assert self.run_dir
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.host_ip,
            "port": self.ports.kubelet,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.ports.kubelet_healthz,
            "tlsCertFile": str(self.kubelet_serving.cert),
            "tlsPrivateKeyFile": str(self.kubelet_serving.key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.kube.ca_file)},
            },
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.containerd_address}",
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,  # hybrid cgroups: v1 controllers
            "failSwapOn": False,
            "oomScoreAdj": 0,  # no CAP_SYS_RESOURCE: cannot go below 0
            "protectKernelDefaults": False,
            "clusterDNS": [self.host_ip],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": "/etc/resolv.conf",
            "podLogsDir": str(self.log_dir / "pods"),
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
                "imagefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,  # never evict the imported images
            "imageGCLowThresholdPercent": 99,
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            "shutdownGracePeriod": "0s",
            "registerNode": True,
        }

    def _start_kubelet(self) -> None:
        assert self.run_dir
        config = self.run_dir / "kubelet.yaml"
        config.write_text(yaml.safe_dump(self._kubelet_config(), sort_keys=False))
        p = self._spawn(
            "kubelet",
            [
                binary("kubelet"),
                f"--config={config}",
                f"--kubeconfig={self.kubelet_kubeconfig}",
                f"--root-dir={self.run_dir / 'kubelet'}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.host_ip}",
                "--v=1",
            ],
        )
        p.wait_until(
            lambda: _http_ok(f"http://127.0.0.1:{self.ports.kubelet_healthz}/healthz"),
            120,
            "kubelet /healthz",
        )
        p.wait_until(self._registered, 120, f"Node {self.name} registered", interval=1)

    def _registered(self) -> bool:
        return (
            self.kube.kubectl("get", "node", self.name, "-o", "name", check=False, timeout=20).returncode == 0
        )

    def _start_scheduler(self) -> None:
        p = self._spawn(
            "kube-scheduler",
            [
                binary("kube-scheduler"),
                f"--kubeconfig={self.kube.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports.scheduler}",
                "--v=1",
            ],
        )
        p.wait_until(
            lambda: _http_ok(f"https://127.0.0.1:{self.ports.scheduler}/healthz"),
            120,
            "kube-scheduler /healthz",
        )

    def _proxy_config(self) -> Path:
        assert self.run_dir
        path = self.run_dir / "kube-proxy.yaml"
        if not path.exists():
            config = {
                "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                "kind": "KubeProxyConfiguration",
                "clientConnection": {"kubeconfig": str(self.kube.kubeconfig)},
                "hostnameOverride": self.name,
                "mode": "iptables",
                "clusterCIDR": self.pod_subnet,
                "detectLocalMode": "ClusterCIDR",
                "healthzBindAddress": f"127.0.0.1:{self.ports.proxy_healthz}",
                "metricsBindAddress": f"127.0.0.1:{self.ports.proxy_metrics}",
                "nodePortAddresses": [f"{self.host_ip}/32"],
                "oomScoreAdj": 0,
                # 0 = leave the host's conntrack sysctls alone.
                "conntrack": {
                    "maxPerCore": 0,
                    "min": 0,
                    "tcpEstablishedTimeout": "0s",
                    "tcpCloseWaitTimeout": "0s",
                    "udpTimeout": "0s",
                    "udpStreamTimeout": "0s",
                },
                # masqueradeAll: Pod -> ClusterIP -> Pod on the same bridge works without br_netfilter;
                # no localhost NodePorts, so route_localnet stays untouched.
                "iptables": {"masqueradeAll": True, "localhostNodePorts": False, "minSyncPeriod": "1s"},
            }
            path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _start_proxy(self) -> None:
        p = self._spawn("kube-proxy", [binary("kube-proxy"), f"--config={self._proxy_config()}", "--v=1"])
        p.wait_until(
            lambda: _http_ok(f"http://127.0.0.1:{self.ports.proxy_healthz}/healthz"),
            120,
            "kube-proxy /healthz",
        )

    def _proxy_cleanup(self) -> None:
        if not self.run_dir:
            return
        with open(self.log_dir / "kube-proxy-cleanup.log", "ab") as log:
            subprocess.run(
                [binary("kube-proxy"), f"--config={self._proxy_config()}", "--cleanup", "--v=1"],
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=120,
                check=False,
            )

    def _start_coredns(self) -> None:
        assert self.run_dir
        conf = self.run_dir / "Corefile"
        conf.write_text(
            corefile(self.host_ip, self.kube.kubeconfig, self.ports.dns_health, self.ports.dns_ready)
        )
        p = self._spawn("coredns", [binary("coredns"), "-conf", conf])
        p.wait_until(
            lambda: _http_ok(f"http://127.0.0.1:{self.ports.dns_ready}/ready"), 120, "CoreDNS /ready"
        )

    def dns_wrapped(self, argv: Sequence[str | os.PathLike]) -> list[str]:
        """``argv`` run in a private mount namespace whose /etc/resolv.conf is :attr:`resolv_conf`.

        For host processes (e.g. the KubeRay operator) that must resolve cluster names.
        """
        script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            script,
            str(self.resolv_conf),
            *map(str, argv),
        ]

    # ---- readiness ------------------------------------------------------------------------------
    def node_object(self) -> dict:
        return json.loads(self.kube.kubectl("get", "node", self.name, "-o", "json", timeout=20).stdout)

    def is_ready(self) -> bool:
        """Ready condition True and no ``not-ready`` taint (so Pods can be scheduled)."""
        node = self.node_object()
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", [])
        )
        taints = [t["key"] for t in node["spec"].get("taints", [])]
        return ready and "node.kubernetes.io/not-ready" not in taints

    def wait_ready(self, timeout: float = 180) -> None:
        self._processes["kubelet"].wait_until(
            self.is_ready, timeout, f"Node {self.name} Ready and untainted", interval=1
        )

    # ---- teardown -------------------------------------------------------------------------------
    def _delete_pods(self, timeout: float = 90) -> None:
        """Delete this node's Pods while the kubelet runs: CNI DEL tears their networking down."""
        if "kubelet" not in self._processes:
            return
        sel = f"spec.nodeName={self.name}"
        r = self.kube.kubectl(
            "delete",
            "pods",
            "-A",
            "--field-selector",
            sel,
            "--grace-period=3",
            "--wait=false",
            check=False,
            timeout=30,
        )
        if r.returncode != 0:
            raise HarnessError(f"could not delete Pods (apiserver down?): {r.stderr.strip()}")

        def remaining() -> str:
            return self.kube.kubectl(
                "get", "pods", "-A", "--field-selector", sel, "-o", "name", check=False, timeout=20
            ).stdout.strip()

        deadline = time.monotonic() + timeout
        while remaining() and time.monotonic() < deadline:
            time.sleep(1)
        if remaining():
            self.kube.kubectl(
                "delete",
                "pods",
                "-A",
                "--field-selector",
                sel,
                "--force",
                "--grace-period=0",
                check=False,
                timeout=30,
            )
            raise HarnessError(f"Pods still on {self.name} after {timeout:.0f}s (force-deleted)")

    def _our_dirs(self) -> list[Path]:
        return [d for d in (self.run_dir, self.containerd_root) if d]

    def _clean_host(self) -> None:
        """Mounts, iptables, links, cgroups, directories, sysctls: back to :attr:`host_before`."""
        problems = restore_host(self.host_before or HostSnapshot.take(), self._our_dirs())
        if self.run_dir and _safe_rmtree(self.run_dir):
            self.run_dir = None
        if problems:
            raise HarnessError("; ".join(problems))

    def leftovers(self) -> list[str]:
        """What differs from :attr:`host_before` (empty after a clean :meth:`stop`)."""
        before = self.host_before or HostSnapshot.take()
        found = [f"iptables chain: {c}" for c in our_chains()]
        current = links()
        found += [f"link: {n}" for n in current if n not in before.links]
        found += [f"netns: {n}" for n in sorted(netns_names() - before.netns)]
        found += [f"cgroup: {c}" for c in kubepods_cgroups()]
        found += [f"mount: {m}" for m in mounts_under(self._our_dirs())]
        found += [f"path: {p}" for p in HOST_PATHS if os.path.lexists(p) and p not in before.paths]
        for name, value in before.sysctls.items():
            now = read_sysctl(name)
            if now != value:
                found.append(f"sysctl {name} = {now} (was {value})")
        found += [f"process: {p!r}" for p in self._processes.values() if p.alive()]
        if self.containerd_address:
            found += [f"process: pid {pid}" for pid in processes_mentioning(self.containerd_address)]
        return found

    def __repr__(self) -> str:
        return f"<Node {self.name} {self.host_ip} running={self._running}>"


def _is_docker_save(path: Path) -> bool:
    """Whether ``path`` is a ``docker save`` tar (it has a ``manifest.json``; an OCI layout has not)."""
    with tarfile.open(path, mode="r:") as archive:
        return any(m.name == "manifest.json" for m in archive)
