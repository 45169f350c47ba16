"""Helpers shared by the install tests (import as ``install._support``)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "detectionjob-operator"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
BAD_VALUES = sorted((Path(__file__).parent / "values").glob("bad-*.yaml"))
#: Kubernetes version for offline rendering (`helm template`/`helm lint` default to
#: v1.20 when helm is built without release ldflags, below the chart's kubeVersion).
KUBE_VERSION = "1.34.0"
#: The documented default install: `helm install detectionjob-operator ... -n detectionjob-system`.
RELEASE = "detectionjob-operator"
NAMESPACE = "detectionjob-system"


def run(argv: Sequence[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("timeout", 120)
    proc = subprocess.run(list(map(str, argv)), capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, argv))} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def load_all(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict], kind: str) -> dict:
    found = by_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_spec(objs: list[dict]) -> dict:
    return one(objs, "Deployment")["spec"]["template"]["spec"]


def container(objs: list[dict]) -> dict:
    (c,) = pod_spec(objs)["containers"]
    return c
