"""Pod Security: the operator pod passes the `restricted` profile of a real apiserver.

A namespace labelled ``pod-security.kubernetes.io/enforce=restricted``; the Deployment's
pod template (from the chart with each values file, and from the kustomize base) is
created there as a bare Pod. Admission is the real PodSecurity plugin; there is no
kubelet, so the accepted Pods stay Pending. Negative controls prove the namespace really
enforces: a root, a privileged, ... variant of the same template is rejected.

(`readOnlyRootFilesystem` is not part of the `restricted` profile; test_chart.py checks
it statically.)
"""

from __future__ import annotations

import copy
import json

import pytest
from install._support import CI_VALUES, REPO, load_all, one, run

pytestmark = pytest.mark.cluster

NS = "dj-pss-restricted"
VALUES = [None, *CI_VALUES]
IDS = ["default", *(p.stem for p in CI_VALUES)]


@pytest.fixture(scope="module")
def restricted_ns(kube):
    kube.create_namespace(NS, labels={
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/warn-version": "latest",
    })
    yield NS
    kube.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def _create_pod(kube, template: dict, name: str):
    spec = copy.deepcopy(template["spec"])
    sa = spec.get("serviceAccountName")
    if sa:  # ServiceAccount admission wants it to exist
        kube.kubectl("create", "serviceaccount", sa, "-n", NS, check=False)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": template["metadata"]["labels"]},
        "spec": spec,
    }
    return kube.kubectl("create", "-f", "-", input=json.dumps(pod), check=False)


def _template(render, values):
    objs = render(*(() if values is None else (values,)))
    return one(objs, "Deployment")["spec"]["template"]


@pytest.mark.parametrize("values", VALUES, ids=IDS)
def test_chart_pod_is_admitted_as_restricted(kube, render, restricted_ns, values):
    name = "op-" + ("default" if values is None else values.stem.removesuffix("-values"))
    proc = _create_pod(kube, _template(render, values), name)
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr  # not even a `warn`-level violation
    got = json.loads(kube.kubectl("get", "pod", name, "-n", NS, "-o", "json").stdout)
    assert got["spec"]["securityContext"]["runAsNonRoot"] is True
    assert got["status"].get("phase") == "Pending"  # no kubelet: admitted, never run


def test_kustomize_base_pod_is_admitted_as_restricted(kube, kubectl_bin, restricted_ns):
    objs = load_all(run([kubectl_bin, "kustomize", REPO / "manifests" / "base"]).stdout)
    template = one(objs, "Deployment")["spec"]["template"]
    proc = _create_pod(kube, template, "op-kustomize-base")
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr
    ns = one(objs, "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def _container_patch(**fields):
    def patch(spec):
        spec["containers"][0]["securityContext"].update(fields)
    return patch


def _pod_patch(**fields):
    def patch(spec):
        spec["securityContext"].update(fields)
    return patch


def _add_capability(spec):
    spec["containers"][0]["securityContext"]["capabilities"]["add"] = ["NET_ADMIN"]


def _no_seccomp(spec):
    spec["securityContext"].pop("seccompProfile")


def _host_path(spec):
    spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})


NEGATIVE = {
    "privileged": _container_patch(privileged=True, allowPrivilegeEscalation=True),
    "root": _pod_patch(runAsNonRoot=False, runAsUser=0),
    "privilege-escalation": _container_patch(allowPrivilegeEscalation=True),
    "capability": _add_capability,
    "no-seccomp": _no_seccomp,
    "host-network": lambda spec: spec.update(hostNetwork=True),
    "host-path": _host_path,
}


@pytest.mark.parametrize("violation", NEGATIVE, ids=list(NEGATIVE))
def test_negative_control_is_rejected(kube, render, restricted_ns, violation):
    template = copy.deepcopy(_template(render, None))
    NEGATIVE[violation](template["spec"])
    proc = _create_pod(kube, template, f"bad-{violation}")
    assert proc.returncode != 0, f"a {violation} pod was admitted into {NS}"
    assert 'violates PodSecurity "restricted:latest"' in proc.stderr, proc.stderr

