"""`helm install` / `upgrade` / `uninstall` of the chart into the real apiserver.

No kubelet runs, so the operator pod never starts: these tests check what Helm and the
apiserver make of the chart (CRDs established, Deployment and RBAC created, RBAC
effective for the ServiceAccount). The operator itself running with this RBAC is
test_rbac.py.
"""

from __future__ import annotations

import json

import pytest
import yaml
from install._support import CHART, CI_VALUES

pytestmark = pytest.mark.cluster

RELEASE = "dj-helm"
NS = "dj-helm-system"
FULLNAME = f"{RELEASE}-detectionjob-operator"
SA = f"system:serviceaccount:{NS}:{FULLNAME}"
TEAMS = ("team-a", "team-b")  # = ci/namespaced-values.yaml


def _get(kube, *args):
    return json.loads(kube.kubectl("get", *args, "-o", "json").stdout)


def _can(kube, verb, resource, namespace=None):
    args = ["auth", "can-i", verb, resource, f"--as={SA}"]
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    return kube.kubectl(*args, check=False).stdout.strip() == "yes"


@pytest.fixture(scope="module")
def release(kube, kuberay):  # kuberay: the RayJob CRD, so that `auth can-i` knows rayjobs
    for ns in TEAMS:
        kube.create_namespace(ns)
    proc = kube.helm("install", RELEASE, CHART, "--namespace", NS, "--create-namespace")
    yield proc
    kube.helm("uninstall", RELEASE, "--namespace", NS, check=False)
    kube.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def test_install_creates_crds_established(kube, release):
    for crd in ("detectionjobs.detectionjob.dev", "kopfpeerings.kopf.dev",
                "clusterkopfpeerings.kopf.dev"):
        kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")
    crd = _get(kube, "crd", "detectionjobs.detectionjob.dev")
    assert crd["spec"]["names"]["shortNames"] == ["dj"]


def test_install_creates_deployment_and_rbac(kube, release):
    assert "Next steps" in release.stdout  # NOTES.txt
    assert f"deployment/{FULLNAME}" in release.stdout
    status = json.loads(kube.helm("status", RELEASE, "-n", NS, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"

    deploy = _get(kube, "deployment", FULLNAME, "-n", NS)
    (c,) = deploy["spec"]["template"]["spec"]["containers"]
    assert c["args"][0] == "operator"
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == FULLNAME
    _get(kube, "serviceaccount", FULLNAME, "-n", NS)
    _get(kube, "service", f"{FULLNAME}-metrics", "-n", NS)
    role = _get(kube, "clusterrole", FULLNAME)
    binding = _get(kube, "clusterrolebinding", FULLNAME)
    assert binding["roleRef"]["name"] == role["metadata"]["name"]

    # The RBAC is effective (as seen by the apiserver's authorizer) and minimal.
    assert _can(kube, "watch", "detectionjobs.detectionjob.dev")
    assert _can(kube, "patch", "detectionjobs.detectionjob.dev/status")
    assert _can(kube, "create", "rayjobs.ray.io")
    assert _can(kube, "create", "events")
    assert not _can(kube, "delete", "detectionjobs.detectionjob.dev")
    assert not _can(kube, "delete", "rayjobs.ray.io")  # the garbage collector does that
    assert not _can(kube, "update", "detectionjobs.detectionjob.dev")
    assert not _can(kube, "get", "secrets")
    assert not _can(kube, "create", "pods")
    assert not _can(kube, "*", "*")


def test_upgrade_to_watched_namespaces(kube, release):
    kube.helm("upgrade", RELEASE, CHART, "-n", NS, "--values",
              CHART / "ci" / "namespaced-values.yaml")
    for ns in TEAMS:
        _get(kube, "role", FULLNAME, "-n", ns)
        _get(kube, "rolebinding", FULLNAME, "-n", ns)
        assert _can(kube, "watch", "detectionjobs.detectionjob.dev", ns)
        assert _can(kube, "create", "rayjobs.ray.io", ns)
    assert not _can(kube, "watch", "detectionjobs.detectionjob.dev", "default")
    assert not _can(kube, "create", "rayjobs.ray.io", "default")
    assert not _can(kube, "watch", "detectionjobs.detectionjob.dev")  # not cluster-wide
    # No cluster-scoped RBAC left in namespaced mode.
    assert not _can(kube, "watch", "customresourcedefinitions.apiextensions.k8s.io")
    assert kube.kubectl("get", "clusterrole", FULLNAME, check=False).returncode != 0
    deploy = _get(kube, "deployment", FULLNAME, "-n", NS)
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args


def test_upgrade_to_replicas_with_peering(kube, release):
    kube.helm("upgrade", RELEASE, CHART, "-n", NS, "--set", "replicaCount=2")
    peering = _get(kube, "clusterkopfpeering", FULLNAME)
    assert peering["apiVersion"] == "kopf.dev/v1"
    assert _can(kube, "patch", "clusterkopfpeerings.kopf.dev")
    deploy = _get(kube, "deployment", FULLNAME, "-n", NS)
    assert deploy["spec"]["replicas"] == 2
    assert deploy["spec"]["strategy"]["type"] == "RollingUpdate"
    # Back to the namespaced Roles being gone (upgrade without watchNamespaces).
    for ns in TEAMS:
        assert kube.kubectl("get", "role", FULLNAME, "-n", ns, check=False).returncode != 0


def test_bad_values_are_rejected_before_anything_is_installed(kube, release):
    proc = kube.helm("install", "dj-helm-bad", CHART, "-n", NS, "--set", "logFormat=yaml",
                     check=False)
    assert proc.returncode != 0
    assert "schema" in proc.stderr
    assert kube.helm("status", "dj-helm-bad", "-n", NS, check=False).returncode != 0


def test_uninstall_keeps_crds(kube, release):
    kube.helm("uninstall", RELEASE, "-n", NS)
    assert kube.kubectl("get", "deployment", FULLNAME, "-n", NS, check=False).returncode != 0
    assert kube.kubectl("get", "clusterrole", FULLNAME, check=False).returncode != 0
    assert kube.kubectl("get", "clusterkopfpeering", FULLNAME, check=False).returncode != 0
    _get(kube, "crd", "detectionjobs.detectionjob.dev")  # DetectionJobs survive


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.stem for p in CI_VALUES])
def test_every_values_file_renders_objects_the_apiserver_accepts(kube, kuberay, render, values):
    """Server-side dry run of `helm template -f <values>`: every object is valid for the real
    apiserver (field names, types, RBAC rules, ...). The ServiceMonitor is skipped (no
    prometheus-operator CRDs here)."""
    for ns in TEAMS:
        kube.create_namespace(ns)
    kube.create_namespace(NS)
    objs = [o for o in render(values, release=RELEASE, namespace=NS)
            if o["kind"] != "ServiceMonitor"]
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", CHART / "crds")
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 "crd/clusterkopfpeerings.kopf.dev", "crd/kopfpeerings.kopf.dev")
    proc = kube.kubectl("apply", "--dry-run=server", "-f", "-",
                        input=yaml.safe_dump_all(objs))
    assert proc.stdout.count("(server dry run)") == len(objs), proc.stdout
