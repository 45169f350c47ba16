"""Kueue queues our RayJobs: quota for one job, two jobs -> the second waits, then is admitted.

The RayJobs are exactly what the operator creates (``to_rayjob(parse(doc))`` with
``spec.queueName``: the queue label and ``spec.suspend: true``), created with kubectl against the
real Kueue (webhooks included, so Kueue's RayJob validation accepts our shape). They live in a
namespace the KubeRay operator does not watch: nothing but Kueue acts on them, no RayCluster or
Pod is attempted (the ``kube`` control plane has no node anyway), so what changes ``spec.suspend``
is Kueue alone. Deleting the first RayJob (its Workload goes with it) frees the quota.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml
from detectionjob_operator.spec import parse
from detectionjob_operator.status import observe
from detectionjob_operator.translate import to_rayjob
from harness import KUBERAY_WATCH_NAMESPACES
from harness.kube import KubeControlPlane
from harness.kueue import Kueue, podset_requests, queue_objects
from harness.waiting import wait_for

pytestmark = pytest.mark.cluster

NAMESPACE = "kueue-queueing"
QUEUE = "team-queue"


def rayjob(name: str) -> dict[str, Any]:
    doc = {
        "apiVersion": "detectionjob.dev/v1alpha1",
        "kind": "DetectionJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"input": {"uri": "s3://in/images/"}, "output": {"uri": "s3://out/results/"},
                 "image": "registry.example/detectionjob-worker:1", "queueName": QUEUE},
    }
    return to_rayjob(parse(doc))


def get(kube: KubeControlPlane, kind: str, name: str) -> dict[str, Any]:
    return json.loads(kube.kubectl("get", kind, name, "-n", NAMESPACE, "-o", "json").stdout)


def workload(kube: KubeControlPlane, rayjob_name: str) -> dict[str, Any] | None:
    """The Workload Kueue made for RayJob ``rayjob_name`` (None until it exists)."""
    items = json.loads(kube.kubectl("get", "workloads.kueue.x-k8s.io", "-n", NAMESPACE,
                                    "-o", "json").stdout)["items"]
    for wl in items:
        if any(o["kind"] == "RayJob" and o["name"] == rayjob_name
               for o in wl["metadata"].get("ownerReferences", [])):
            return wl
    return None


def condition(obj: dict[str, Any] | None, ctype: str) -> str | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions", []):
        if cond["type"] == ctype:
            return cond["status"]
    return None


def admitted(kube: KubeControlPlane, name: str) -> bool:
    """Kueue admitted the RayJob: its Workload is Admitted and the RayJob is unsuspended."""
    return condition(workload(kube, name), "Admitted") == "True" and \
        not get(kube, "rayjob", name)["spec"].get("suspend")


def test_second_rayjob_waits_for_quota_then_runs(kube: KubeControlPlane, kueue: Kueue) -> None:
    assert NAMESPACE not in KUBERAY_WATCH_NAMESPACES
    kube.create_namespace(NAMESPACE)
    first, second = rayjob("first"), rayjob("second")
    assert first["spec"]["suspend"] is True
    assert first["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == QUEUE
    quota = podset_requests(first)  # head + worker + submitter: exactly one job
    print(f"ClusterQueue quota (one job): { {k: str(v) for k, v in quota.items()} }")
    queues = queue_objects("one-job", QUEUE, NAMESPACE, quota)
    kueue.kubectl_apply(queues)
    try:
        wait_for("ClusterQueue one-job Active", lambda: condition(json.loads(kube.kubectl(
            "get", "clusterqueue", "one-job", "-o", "json").stdout), "Active") == "True", timeout=60)

        kube.kubectl("create", "-f", "-", input=yaml.safe_dump(first))
        wait_for("the first RayJob admitted", lambda: admitted(kube, "first"), timeout=60)

        kube.kubectl("create", "-f", "-", input=yaml.safe_dump(second))
        wl = wait_for("the second RayJob's Workload evaluated (QuotaReserved False)",
                      lambda: (w := workload(kube, "second")) and condition(w, "QuotaReserved") == "False"
                      and w, timeout=60)
        print("second Workload:", [c.get("message") for c in wl["status"]["conditions"]])
        time.sleep(3)  # and it stays so: the scheduler had its chance
        rj = get(kube, "rayjob", "second")
        assert rj["spec"]["suspend"] is True
        assert condition(workload(kube, "second"), "Admitted") != "True"
        assert admitted(kube, "first")
        # The operator would show it as Pending/Queued (the first one is no longer queued).
        assert observe(rj, user_suspend=False, queue=QUEUE).reason == "Queued"
        assert observe(get(kube, "rayjob", "first"), user_suspend=False, queue=QUEUE).reason != "Queued"

        kube.kubectl("delete", "rayjob", "first", "-n", NAMESPACE, "--wait=true", "--timeout=60s")
        wait_for("the second RayJob admitted after the first is gone",
                 lambda: admitted(kube, "second"), timeout=60)
    finally:
        kube.kubectl("delete", "rayjob", "--all", "-n", NAMESPACE, "--timeout=60s", check=False)
        for obj in reversed(queues):
            ns = ["-n", obj["metadata"]["namespace"]] if "namespace" in obj["metadata"] else []
            kube.kubectl("delete", f"{obj['kind'].lower()}.kueue.x-k8s.io", obj["metadata"]["name"],
                         *ns, "--ignore-not-found", "--timeout=60s", check=False)
