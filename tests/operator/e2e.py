"""Helpers for the operator's end-to-end tests: the operator as a real subprocess, polling."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import harness
from djtest import ROOT

CRD = ROOT / "manifests" / "crd" / "detectionjob.dev_detectionjobs.yaml"
T = TypeVar("T")

#: kopf resolves --namespace globs (the module operator watches ``dje2e-*``) by listing
#: namespaces. The chart takes exact namespace names only, so it never grants this; it is the
#: one rule of operator/RBAC.md beyond the chart (tests/install/test_chart.py checks the doc).
GLOB_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
]


def chart_rules(*sets: str) -> list[dict[str, Any]]:
    """The operator's RBAC rules as the Helm chart (their one definition) renders them with
    these ``--set`` values: the ClusterRole's by default, the Role's with one watchNamespace."""
    from harness.binaries import binary
    from install._support import CHART, KUBE_VERSION, RELEASE, load_all, run

    argv = [binary("helm"), "template", RELEASE, CHART, "--kube-version", KUBE_VERSION]
    for value in sets:
        argv += ["--set", value]
    roles = [o for o in load_all(run(argv).stdout) if o["kind"] in ("ClusterRole", "Role")]
    assert len(roles) == 1, [(o["kind"], o["metadata"]) for o in roles]
    return roles[0]["rules"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 120,
             interval: float = 0.2) -> T:
    """:func:`harness.wait_for`, retrying through API errors (the operator may be restarting)."""
    return harness.wait_for(what, fn, timeout, interval, retry_errors=True)


class Operator:
    """``detectionjob operator`` as a child process (own process group, so kill is real)."""

    def __init__(self, kubeconfig: Path, namespaces: list[str], log_path: Path,
                 extra: list[str] | None = None) -> None:
        self.kubeconfig, self.namespaces, self.log_path = kubeconfig, namespaces, log_path
        self.extra = extra or []
        self.proc: subprocess.Popen | None = None
        self.liveness_port = free_port()
        self.metrics_port = free_port()

    def start(self) -> Operator:
        args = [sys.executable, "-m", "detectionjob_operator", "operator",
                "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz",
                "--metrics-port", str(self.metrics_port), "--log-format", "json", *self.extra]
        for ns in self.namespaces:
            args += ["--namespace", ns]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     cwd=ROOT, start_new_session=True)
        log.close()
        wait_for("the operator's liveness endpoint", self.alive_and_ready, timeout=60)
        return self

    def alive_and_ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"operator exited {self.proc.returncode}:\n{self.log_tail()}")
        return self.get(self.liveness_port, "/healthz")[0] == 200

    def get(self, port: int, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                return resp.status, resp.read().decode()
        except OSError:
            return 0, ""

    def metrics(self) -> str:
        return self.get(self.metrics_port, "/metrics")[1]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill(signal.SIGTERM)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return records
