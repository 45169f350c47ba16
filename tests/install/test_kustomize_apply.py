"""`kubectl apply -k manifests/...` and `kubectl apply -f examples/detectionjob.yaml` into
the real apiserver (the GitOps path: what Argo CD or Flux would apply)."""

from __future__ import annotations

import json
import shutil

import pytest
from install._support import REPO, run

pytestmark = pytest.mark.cluster

BASE = REPO / "manifests" / "base"
EXAMPLE = REPO / "manifests" / "overlays" / "example"
NS = "detectionjob-system"  # the base's namespace
JOBS_NS = "dj-kustomize-jobs"  # not watched by KubeRay
NAME = "detectionjob-operator"


def _get(kube, *args):
    return json.loads(kube.kubectl("get", *args, "-o", "json").stdout)


@pytest.fixture(scope="module")
def jobs_kubeconfig(kube, tmp_path_factory):
    """The admin kubeconfig with JOBS_NS as its current namespace: `kubectl apply -k` of
    the example overlay puts the (namespace-less) DetectionJob there."""
    kube.create_namespace(JOBS_NS)
    path = tmp_path_factory.mktemp("kustomize") / "kubeconfig"
    shutil.copy(kube.kubeconfig, path)
    run([kube.bin("kubectl"), f"--kubeconfig={path}", "config", "set-context", "--current",
         f"--namespace={JOBS_NS}"])
    yield path
    _delete_jobs(kube, JOBS_NS)
    kube.kubectl("delete", "namespace", JOBS_NS, "--wait=false", check=False)


def _delete_jobs(kube, ns):
    """Delete DetectionJobs without waiting on a finalizer no operator will remove."""
    jobs = _get(kube, "detectionjobs", "-n", ns)["items"]
    for dj in jobs:
        name = dj["metadata"]["name"]
        kube.kubectl("patch", "detectionjob", name, "-n", ns, "--type=merge",
                     "-p", '{"metadata":{"finalizers":null}}', check=False)
        kube.kubectl("delete", "detectionjob", name, "-n", ns, "--wait=false", check=False)


@pytest.fixture(scope="module")
def base(kube):
    proc = kube.kubectl("apply", "--server-side", "--force-conflicts", "-k", BASE)
    yield proc
    # Everything but the CRDs (other tests' DetectionJobs live in them).
    kube.kubectl("delete", "clusterrolebinding,clusterrole", NAME, "--ignore-not-found",
                 check=False)
    kube.kubectl("delete", "namespace", NS, "--wait=false", "--ignore-not-found", check=False)


def test_apply_base(kube, base):
    for line in ("customresourcedefinition.apiextensions.k8s.io/detectionjobs.detectionjob.dev",
                 f"namespace/{NS}", f"deployment.apps/{NAME}",
                 f"clusterrole.rbac.authorization.k8s.io/{NAME}"):
        assert line in base.stdout, base.stdout
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 "crd/detectionjobs.detectionjob.dev")
    ns = _get(kube, "namespace", NS)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    deploy = _get(kube, "deployment", NAME, "-n", NS)
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == NAME
    _get(kube, "serviceaccount", NAME, "-n", NS)
    _get(kube, "service", f"{NAME}-metrics", "-n", NS)
    binding = _get(kube, "clusterrolebinding", NAME)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": NS}]
    sa = f"--as=system:serviceaccount:{NS}:{NAME}"
    can = kube.kubectl("auth", "can-i", "watch", "detectionjobs.detectionjob.dev", sa, "-A")
    assert can.stdout.strip() == "yes"
    cannot = kube.kubectl("auth", "can-i", "get", "secrets", sa, "-A", check=False)
    assert cannot.stdout.strip() == "no"


def test_apply_base_again_is_a_no_op(kube, base):
    proc = kube.kubectl("apply", "--server-side", "-k", BASE)
    assert "serverside-applied" in proc.stdout
    diff = kube.kubectl("diff", "--server-side", "-k", BASE, check=False)
    assert diff.returncode == 0, diff.stdout  # GitOps: no drift right after applying


def test_apply_example_overlay(kube, base, jobs_kubeconfig):
    kubectl = [kube.bin("kubectl"), f"--kubeconfig={jobs_kubeconfig}"]
    proc = run([*kubectl, "apply", "--server-side", "-k", EXAMPLE])
    assert "detectionjob.detectionjob.dev/voc-fasterrcnn serverside-applied" in proc.stdout
    dj = _get(kube, "detectionjob", "voc-fasterrcnn", "-n", JOBS_NS)
    assert dj["spec"]["model"]["name"]
    short = kube.kubectl("get", "dj", "-n", JOBS_NS, "-o", "name").stdout
    assert "detectionjob.detectionjob.dev/voc-fasterrcnn" in short


def test_apply_example_file(kube, base):
    ns = "dj-kustomize-example"
    kube.create_namespace(ns)
    kube.kubectl("apply", "-f", REPO / "examples" / "detectionjob.yaml", "-n", ns,
                 "--dry-run=server")
    proc = kube.kubectl("apply", "-f", REPO / "examples" / "detectionjob.yaml", "-n", ns)
    assert "detectionjob.detectionjob.dev/voc-fasterrcnn" in proc.stdout
    assert "created" in proc.stdout
    got = _get(kube, "detectionjob", "voc-fasterrcnn", "-n", ns)
    assert got["spec"]["workers"]["replicas"] >= 1
    _delete_jobs(kube, ns)
    kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_invalid_detectionjob_is_rejected_by_the_crd_schema(kube, base, jobs_kubeconfig):
    bad = {"apiVersion": "detectionjob.dev/v1alpha1", "kind": "DetectionJob",
           "metadata": {"name": "bad", "namespace": JOBS_NS},
           "spec": {"workers": {"replicas": "many"}}}
    proc = kube.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert proc.returncode != 0
    assert "Invalid value" in proc.stderr or "invalid" in proc.stderr.lower(), proc.stderr
