"""The operator end to end, against the real control plane (tests/harness) and real KubeRay.

The operator runs as a subprocess under a ServiceAccount bound to exactly the RBAC the Helm
chart grants (rendered from charts/detectionjob-operator; plus list/watch on namespaces for a
namespace glob, which the chart never uses). KubeRay watches only
harness.KUBERAY_WATCH_NAMESPACES; elsewhere the tests play KubeRay by patching the RayJob's
status subresource the way KubeRay does.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from djtest import EXAMPLE, ROOT, make_dj
from e2e import CRD, GLOB_RULES, Operator, chart_rules, wait_for

from inference.detectionjob_api import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.cluster

RAY = ("ray.io", "v1", "rayjobs")
SYSTEM_NS = "dje2e-system"
KUBERAY_NS = "kuberay-watched"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def api(kube, kuberay):
    from kubernetes import client

    crd_applied(kube)
    return client.CustomObjectsApi(kube.api_client())


def crd_applied(kube) -> None:
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 "crd/detectionjobs.detectionjob.dev")


@pytest.fixture(scope="module")
def operator_kubeconfig(kube, kuberay) -> Path:
    """A kubeconfig for ServiceAccount dje2e-system/detectionjob-operator with the rules of the
    chart's ClusterRole, and list/watch on namespaces for the operator's ``dje2e-*`` glob."""
    kube.create_namespace(SYSTEM_NS)
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "dje2e-operator"}, "rules": chart_rules() + GLOB_RULES}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "dje2e-operator"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "dje2e-operator"},
               "subjects": [{"kind": "ServiceAccount", "name": "detectionjob-operator",
                             "namespace": SYSTEM_NS}]}
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([role, binding]))
    return kube.serviceaccount_kubeconfig(SYSTEM_NS, "detectionjob-operator")


@pytest.fixture(scope="module")
def operator(kube, api, operator_kubeconfig, tmp_path_factory):
    """The operator for ``dje2e-*``, started and seen handling a DetectionJob in such a namespace:
    kopf answers its liveness probe before it watches the namespaces a glob matches, and a
    namespace made in between went unnoticed for two minutes in a loaded CI run."""
    op = Operator(operator_kubeconfig, ["dje2e-*"],
                  tmp_path_factory.mktemp("operator") / "operator.log").start()
    kube.create_namespace("dje2e-ready")
    apply_dj(kube, make_dj({"model": {"name": "not_a_model"}}, name="ready", namespace="dje2e-ready"))
    wait_for("the operator handling a DetectionJob in dje2e-ready",
             lambda: ((get_dj(api, "dje2e-ready", "ready") or {}).get("status") or {}).get("phase"),
             timeout=240)
    yield op
    op.stop()


@pytest.fixture(scope="module")
def kuberay_operator(api, operator_kubeconfig, tmp_path_factory):
    """An operator for the namespace the real KubeRay watches."""
    op = Operator(operator_kubeconfig, [KUBERAY_NS],
                  tmp_path_factory.mktemp("operator") / "kuberay-operator.log").start()
    yield op
    op.stop()


@pytest.fixture
def namespace(kube, request) -> str:
    name = "dje2e-" + request.node.name.removeprefix("test_").replace("_", "-")[:40].rstrip("-")
    kube.create_namespace(name)
    return name


# ---------------------------------------------------------------- helpers


def apply_dj(kube, doc: dict[str, Any]) -> None:
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))


def get_dj(api, ns: str, name: str) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def get_rayjob(api, ns: str, name: str) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return api.get_namespaced_custom_object(*RAY[:2], ns, RAY[2], name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def list_rayjobs(api, ns: str) -> list[dict[str, Any]]:
    return api.list_namespaced_custom_object(*RAY[:2], ns, RAY[2])["items"]


def wait_phase(api, ns: str, name: str, phase: str, reason: str | None = None,
               timeout: float = 120) -> dict[str, Any]:
    def check():
        dj = get_dj(api, ns, name)
        status = (dj or {}).get("status") or {}
        if status.get("phase") == phase and (reason is None or status.get("reason") == reason):
            return dj
        return None

    return wait_for(f"{ns}/{name} phase {phase} ({reason})", check, timeout=timeout)


def play_kuberay(api, ns: str, name: str, status: dict[str, Any]) -> None:
    """Patch the RayJob's status subresource as KubeRay's controller would."""
    api.patch_namespaced_custom_object_status(*RAY[:2], ns, RAY[2], name, {"status": status},
                                              _content_type="application/merge-patch+json")


def events_for(kube, ns: str, name: str) -> list[dict[str, Any]]:
    out = kube.kubectl("get", "events", "-n", ns, "-o", "json",
                       "--field-selector", f"involvedObject.name={name}").stdout
    return [e for e in json.loads(out)["items"]
            if e["involvedObject"].get("kind") == "DetectionJob"]


def event_reasons(kube, ns: str, name: str) -> set[str]:
    return {e["reason"] for e in events_for(kube, ns, name)}


def subset(small: Any, big: Any, path: str = "") -> None:
    """Every field of ``small`` is in ``big`` with the same value (nothing pruned or changed)."""
    if isinstance(small, dict):
        assert isinstance(big, dict), path
        for key, value in small.items():
            assert key in big, f"{path}.{key} was pruned"
            subset(value, big[key], f"{path}.{key}")
    elif isinstance(small, list):
        assert isinstance(big, list) and len(small) == len(big), path
        for i, (a, b) in enumerate(zip(small, big, strict=True)):
            subset(a, b, f"{path}[{i}]")
    else:
        assert small == big, f"{path}: {small!r} != {big!r}"


# ---------------------------------------------------------------- tests


def test_crd_rejects_invalid_and_immutable_specs(kube, api, namespace):
    bad = make_dj({"workers": {"minReplicas": 3, "maxReplicas": 2}}, name="bad",
                  namespace=namespace)
    proc = kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert proc.returncode != 0
    assert "spec.workers.minReplicas must be <= spec.workers.maxReplicas" in proc.stderr
    proc = kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(
        make_dj({"output": {"mode": "append"}}, name="bad2", namespace=namespace)), check=False)
    assert proc.returncode != 0 and "spec.output.mode" in proc.stderr
    for size in ("many", 0, 2000):  # an integer 1-1024 or "auto"
        proc = kube.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(
            make_dj({"batchSize": size}, name="bad3", namespace=namespace)), check=False)
        assert proc.returncode != 0 and "spec.batchSize" in proc.stderr, (size, proc.stderr)
    proc = kube.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=yaml.safe_dump(
        make_dj({"batchSize": "auto"}, name="auto", namespace=namespace)))
    assert json.loads(proc.stdout)["spec"]["batchSize"] == "auto"
    good = make_dj(name="immutable", namespace=namespace)
    apply_dj(kube, good)
    stored = get_dj(api, namespace, "immutable")
    assert stored["spec"]["workers"]["gpuResource"] == "nvidia.com/gpu"  # defaults applied
    assert stored["spec"]["model"]["name"] == "fasterrcnn_resnet50_fpn_v2"
    proc = kube.kubectl("patch", "dj", "immutable", "-n", namespace, "--type=merge", "-p",
                        '{"spec": {"batchSize": 64}}', check=False)
    assert proc.returncode != 0 and "spec.batchSize is immutable" in proc.stderr
    kube.kubectl("patch", "dj", "immutable", "-n", namespace, "--type=merge", "-p",
                 '{"spec": {"suspend": true}}')
    kube.kubectl("delete", "dj", "immutable", "-n", namespace)


def test_example_makes_a_rayjob_kuberay_runs(kube, api, kuberay_operator):
    """kubectl apply -f examples/detectionjob.yaml -> RayJob (strict) -> KubeRay's RayCluster."""
    name = "voc-fasterrcnn"
    kube.kubectl("apply", "-n", KUBERAY_NS, "-f", str(EXAMPLE))
    rayjob = wait_for("the RayJob", lambda: get_rayjob(api, KUBERAY_NS, name))
    dj = get_dj(api, KUBERAY_NS, name)
    owner = rayjob["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "DetectionJob", name, dj["metadata"]["uid"], True)

    # The API server's strict field validation accepts the RayJob whole, and stores all of
    # it: nothing pruned. (Compared on a dry-run create: KubeRay later rewrites the stored
    # object through its Go types, which drop false/zero fields such as suspend: false.)
    rendered = subprocess.run(
        [sys_executable(), "-m", "detectionjob_operator", "render", "-n", KUBERAY_NS,
         "-f", str(EXAMPLE)], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    expected = yaml.safe_load(rendered)
    assert expected["spec"]["entrypoint"] == rayjob["spec"]["entrypoint"]
    assert expected["spec"]["runtimeEnvYAML"] == rayjob["spec"]["runtimeEnvYAML"]
    expected["metadata"]["name"] = "strict-check"
    proc = kube.kubectl("create", "--dry-run=server", "--validate=strict", "-o", "json",
                        "-f", "-", input=yaml.safe_dump(expected))
    assert proc.stderr.strip() == "", proc.stderr
    stored = json.loads(proc.stdout)
    subset(expected["spec"], stored["spec"], "spec")
    subset(expected["metadata"]["labels"], stored["metadata"]["labels"], "labels")

    # The real KubeRay operator makes the RayCluster with the GPU worker group.
    cluster_name = wait_for("KubeRay to name the RayCluster", lambda: (get_rayjob(
        api, KUBERAY_NS, name).get("status") or {}).get("rayClusterName"), timeout=90)
    cluster = wait_for("the RayCluster", lambda: api.get_namespaced_custom_object(
        "ray.io", "v1", KUBERAY_NS, "rayclusters", cluster_name), timeout=90)
    (group,) = cluster["spec"]["workerGroupSpecs"]
    assert group["groupName"] == "gpu-workers" and group["replicas"] == 4
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert str(limits["nvidia.com/gpu"]) == "1"
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]
    dj = wait_for("rayClusterName in the DetectionJob's status", lambda: (
        lambda d: d if (d.get("status") or {}).get("rayClusterName") else None)(
            get_dj(api, KUBERAY_NS, name)))
    assert dj["status"]["phase"] == "Pending" and dj["status"]["rayJobName"] == name

    kube.kubectl("delete", "dj", name, "-n", KUBERAY_NS, "--wait=false")
    wait_for("RayJob deleted", lambda: get_rayjob(api, KUBERAY_NS, name) is None, timeout=90)
    wait_for("RayCluster deleted", lambda: cluster_name not in {
        c["metadata"]["name"] for c in api.list_namespaced_custom_object(
            "ray.io", "v1", KUBERAY_NS, "rayclusters")["items"]}, timeout=90)


def test_kuberay_submitter_command_runs_no_hostile_string(kube, api, kuberay_operator,
                                                           tmp_path):
    """KubeRay's own submitter Job, built by its Go code from our RayJob, run in a real bash.

    No kubelet runs here, so the test marks the Ray Pods Running/Ready (pods/status), KubeRay
    then creates the K8sJobMode submitter Job; its command is executed with a fake ``ray``.
    """
    name = "hostile"
    evil = "$(touch${IFS}CANARY)`touch${IFS}CANARY`;touch${IFS}CANARY;'\"\\${HOME}"
    doc = make_dj({"input": {"uri": "s3://in/" + evil}, "output": {"uri": "s3://out/" + evil},
                   "model": {"weights": evil + "\n$(touch CANARY)"},
                   "workers": {"replicas": 1}}, name=name, namespace=KUBERAY_NS)
    apply_dj(kube, doc)
    cluster = wait_for("KubeRay's RayCluster", lambda: (get_rayjob(
        api, KUBERAY_NS, name).get("status") or {}).get("rayClusterName"), timeout=90)
    from kubernetes import client

    core = client.CoreV1Api(kube.api_client())
    pods = wait_for("the head and worker Pods", lambda: (lambda items: items if len(items) == 2
                    else None)(core.list_namespaced_pod(
                        KUBERAY_NS, label_selector=f"ray.io/cluster={cluster}").items))
    for pod in pods:
        kube.kubectl("patch", "pod", pod.metadata.name, "-n", KUBERAY_NS, "--subresource=status",
                     "--type=merge", "-p", json.dumps({"status": {
                         "phase": "Running", "podIP": "10.0.0.1",
                         "conditions": [{"type": "Ready", "status": "True"}]}}))
    batch = client.BatchV1Api(kube.api_client())

    def submitter():
        jobs = batch.list_namespaced_job(KUBERAY_NS).items
        return next((j for j in jobs if j.metadata.name == name), None)

    job = wait_for("KubeRay's submitter Job", submitter, timeout=120)
    container = job.spec.template.spec.containers[0]
    assert container.command[:2] == ["/bin/bash", "-ce"], container.command
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent",
           # exported bash functions standing in for the programs the command calls
           "BASH_FUNC_ray%%": "() { if [ \"$2\" = status ]; then return 1; fi; "
                              "if [ \"$2\" = submit ]; then printf '%s\\0' \"$@\" > SUBMITTED; "
                              "fi; }",
           "BASH_FUNC_python%%": "() { return 0; }"}
    for var in container.env or ():
        env[var.name] = var.value or ""
    subprocess.run([*container.command, *container.args], cwd=tmp_path, env=env, check=True,
                   timeout=60)
    assert not (tmp_path / "CANARY").exists(), "a user string ran in KubeRay's submitter shell"
    argv = (tmp_path / "SUBMITTED").read_bytes().decode().split("\0")[:-1]
    assert argv[argv.index("--") + 1:] == ["python", "-m", "inference", "run",
                                           "--args-json-env", "DETECTIONJOB_ARGS"]
    runtime_env = json.loads(argv[argv.index("--runtime-env-json") + 1])
    args = json.loads(runtime_env["env_vars"]["DETECTIONJOB_ARGS"])
    assert args["input"] == "s3://in/" + evil and args["output"] == "s3://out/" + evil
    assert args["weights"] == evil + "\n$(touch CANARY)"
    assert runtime_env["env_vars"]["DETECTIONJOB_STATUS_TARGET"] == f"{KUBERAY_NS}/{name}"
    kube.kubectl("delete", "dj", name, "-n", KUBERAY_NS, "--wait=false")


def sys_executable() -> str:
    import sys

    return sys.executable


def test_status_follows_rayjob_to_success(kube, api, operator, namespace):
    name = "follow-ok"
    apply_dj(kube, make_dj({"workers": {"replicas": 2, "gpusPerWorker": 2}}, name=name,
                           namespace=namespace))
    wait_for("the RayJob", lambda: get_rayjob(api, namespace, name))
    dj = wait_phase(api, namespace, name, "Pending", "RayJobCreated")
    assert dj["status"]["gpus"] == 4 and dj["status"]["observedGeneration"] == 1
    assert dj["status"]["rayJobName"] == name

    play_kuberay(api, namespace, name, {"jobDeploymentStatus": "Initializing",
                                        "rayClusterName": f"{name}-x7k2p", "jobId": f"{name}-j1",
                                        "startTime": "2026-01-01T10:00:00Z"})
    dj = wait_phase(api, namespace, name, "Pending", "ClusterStarting")
    assert dj["status"]["rayClusterName"] == f"{name}-x7k2p"
    play_kuberay(api, namespace, name, {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING",
                                        "dashboardURL": f"{name}-head-svc.{namespace}.svc:8265"})
    dj = wait_phase(api, namespace, name, "Running", "JobRunning")
    status = dj["status"]
    assert status["jobId"] == f"{name}-j1" and status["startTime"] == "2026-01-01T10:00:00Z"
    assert status["dashboardURL"] == f"{name}-head-svc.{namespace}.svc:8265"
    assert status.get("completionTime") is None
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"RayJobCreated": "True", "Running": "True", "Progressing": "True",
                          "Evaluated": "False", "Suspended": "False", "Succeeded": "False",
                          "Failed": "False"}

    # Progress, from the job's own ServiceAccount (the one the head Pod runs as).
    from detectionjob_operator.translate import reporter_name

    from inference.status_reporter import StatusReporter

    job_kubeconfig = kube.serviceaccount_kubeconfig(namespace, reporter_name(name), create=False)
    from kubernetes import client, config

    job_api = client.CustomObjectsApi(config.new_client_from_config(str(job_kubeconfig)))
    reporter = StatusReporter(f"{namespace}/{name}", interval=0, api=job_api)
    reporter(1200, 5011, 3)
    table = kube.kubectl("get", "dj", name, "-n", namespace).stdout
    assert "1200/5011 (23%)" in table and "Running" in table and "4" in table

    # The job's stall watchdog found a stalled batch: Progressing=False (Stalled) and an Event,
    # until images complete again.
    def progressing() -> tuple[str, str, str]:
        conds = {c["type"]: c for c in get_dj(api, namespace, name)["status"]["conditions"]}
        return conds["Progressing"]["status"], conds["Progressing"]["reason"], conds["Progressing"]["message"]

    stall = "stalled: a detector (pid 41, node 0a1b2c3d) has had no result for 131 s"
    reporter(1200, 5011, 3, stalled=stall)
    wait_for("Progressing=False, Stalled", lambda: progressing() == ("False", "Stalled", stall))
    wait_for("a Stalled Event", lambda: "Stalled" in event_reasons(kube, namespace, name))
    reporter(1210, 5011, 3)
    wait_for("Progressing=True again", lambda: progressing()[:2] == ("True", "Detecting"))
    wait_for("a Recovered Event", lambda: "Recovered" in event_reasons(kube, namespace, name))
    assert "stalled" not in get_dj(api, namespace, name)["status"]["progress"]

    # The end of the run: device use into status.progress, the evaluation (spec.evaluation) into
    # status.evaluation: the mAP column, the condition Evaluated and an Event.
    reporter.finish({"busy_fraction": 0.62, "images_per_device_hour": 51000.0, "device_seconds": 353.2,
                     "evaluation": {"annotations": "s3://gt/voc/", "map": 0.4123, "map_50": 0.6234,
                                    "report": "s3://out/results/_evaluation.json"}})

    def evaluated() -> dict:
        conds = {c["type"]: c for c in get_dj(api, namespace, name)["status"]["conditions"]}
        return conds["Evaluated"]

    wait_for("Evaluated=True", lambda: evaluated()["status"] == "True")
    assert evaluated()["message"] == ("mAP 0.412, AP50 0.623 against s3://gt/voc/ "
                                      "(s3://out/results/_evaluation.json)")
    wait_for("an Evaluated Event", lambda: "Evaluated" in event_reasons(kube, namespace, name))
    header, row = kube.kubectl("get", "dj", name, "-n", namespace).stdout.splitlines()[:2]
    assert "MAP" in header.split() and "0.4123" in row.split(), (header, row)
    progress = get_dj(api, namespace, name)["status"]["progress"]
    assert (progress["busyFraction"], progress["deviceSeconds"]) == (0.62, 353.2)
    # ... and it can patch nothing else: not another DetectionJob's status, not its own spec.
    apply_dj(kube, make_dj(name="other", namespace=namespace))
    other = StatusReporter(f"{namespace}/other", interval=0, api=job_api)
    other(1, 1, 0)
    assert "progress" not in (get_dj(api, namespace, "other").get("status") or {})
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as denied:
        job_api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                               {"spec": {"suspend": True}},
                                               _content_type="application/merge-patch+json")
    assert denied.value.status == 403

    play_kuberay(api, namespace, name, {"jobDeploymentStatus": "Complete",
                                        "jobStatus": "SUCCEEDED",
                                        "endTime": "2026-01-01T11:00:00Z"})
    dj = wait_phase(api, namespace, name, "Succeeded", "JobSucceeded")
    assert dj["status"]["completionTime"] == "2026-01-01T11:00:00Z"
    assert dj["status"]["progress"]["done"] == 1210  # the operator never touches progress
    wait_for("Events on every transition", lambda: {
        "RayJobCreated", "ClusterStarting", "JobRunning", "JobSucceeded"} <= event_reasons(
        kube, namespace, name))


def test_status_follows_rayjob_to_failure(kube, api, operator, namespace):
    name = "follow-fail"
    apply_dj(kube, make_dj({"activeDeadlineSeconds": 60}, name=name, namespace=namespace))
    wait_for("the RayJob", lambda: get_rayjob(api, namespace, name))
    play_kuberay(api, namespace, name, {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING",
                                        "rayClusterName": f"{name}-abcde"})
    wait_phase(api, namespace, name, "Running")
    play_kuberay(api, namespace, name, {
        "jobDeploymentStatus": "Failed", "jobStatus": "RUNNING", "reason": "DeadlineExceeded",
        "message": "The RayJob has passed the activeDeadlineSeconds. DeletionTimestamp: ...",
        "endTime": "2026-01-01T12:00:00Z"})
    dj = wait_phase(api, namespace, name, "Failed", "DeadlineExceeded")
    assert "activeDeadlineSeconds" in dj["status"]["message"]
    conditions = {c["type"]: c for c in dj["status"]["conditions"]}
    assert conditions["Failed"]["status"] == "True"
    assert conditions["Failed"]["reason"] == "DeadlineExceeded"
    events = wait_for("a Warning Event", lambda: [
        e for e in events_for(kube, namespace, name) if e["type"] == "Warning"])
    assert events[0]["reason"] == "DeadlineExceeded"


def test_invalid_spec_past_admission_fails_cleanly(kube, api, operator, namespace):
    # "0" matches the CRD's quantity pattern, but a worker with no CPU is not a worker.
    apply_dj(kube, make_dj({"workers": {"cpusPerWorker": "0"}}, name="zero-cpu",
                           namespace=namespace))
    dj = wait_phase(api, namespace, "zero-cpu", "Failed", "InvalidSpec")
    assert "spec.workers.cpusPerWorker" in dj["status"]["message"]
    assert list_rayjobs(api, namespace) == []
    wait_for("an InvalidSpec Event", lambda: "InvalidSpec" in event_reasons(
        kube, namespace, "zero-cpu"))
    assert operator.alive_and_ready()
    # The operator keeps working for the next one.
    apply_dj(kube, make_dj(name="after", namespace=namespace))
    wait_for("the next RayJob", lambda: get_rayjob(api, namespace, "after"))


def test_suspend_toggles_the_rayjob(kube, api, operator, namespace):
    name = "pausable"
    apply_dj(kube, make_dj(name=name, namespace=namespace))
    wait_for("the RayJob", lambda: get_rayjob(api, namespace, name))
    play_kuberay(api, namespace, name, {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"})
    wait_phase(api, namespace, name, "Running")
    kube.kubectl("patch", "dj", name, "-n", namespace, "--type=merge", "-p",
                 '{"spec": {"suspend": true}}')
    wait_for("RayJob suspended", lambda: get_rayjob(api, namespace, name)["spec"]["suspend"])
    play_kuberay(api, namespace, name, {"jobDeploymentStatus": "Suspended", "jobStatus": "",
                                        "rayClusterName": ""})
    dj = wait_phase(api, namespace, name, "Suspended")
    assert dj["status"]["observedGeneration"] == dj["metadata"]["generation"] == 2
    kube.kubectl("patch", "dj", name, "-n", namespace, "--type=merge", "-p",
                 '{"spec": {"suspend": false}}')
    wait_for("RayJob resumed",
             lambda: get_rayjob(api, namespace, name)["spec"]["suspend"] is False)
    play_kuberay(api, namespace, name, {"jobDeploymentStatus": "Initializing"})
    wait_phase(api, namespace, name, "Pending", "ClusterStarting")
    wait_for("Suspending/Resuming Events", lambda: {"Suspending", "Resuming", "Suspended"} <=
             event_reasons(kube, namespace, name))


def test_queued_job_carries_the_kueue_label(kube, api, operator, namespace):
    apply_dj(kube, make_dj({"queueName": "gpu-queue"}, name="queued", namespace=namespace))
    rayjob = wait_for("the RayJob", lambda: get_rayjob(api, namespace, "queued"))
    assert rayjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert rayjob["spec"]["suspend"] is True
    play_kuberay(api, namespace, "queued", {"jobDeploymentStatus": "Suspended"})
    wait_phase(api, namespace, "queued", "Pending", "Queued")


def test_rayjob_deleted_by_someone_else(kube, api, operator, namespace):
    name = "orphaned"
    apply_dj(kube, make_dj(name=name, namespace=namespace))
    wait_for("the RayJob", lambda: get_rayjob(api, namespace, name))
    wait_phase(api, namespace, name, "Pending")
    kube.kubectl("delete", "rayjob", name, "-n", namespace)
    dj = wait_phase(api, namespace, name, "Failed", "RayJobDeleted")
    assert "deleted by someone else" in dj["status"]["message"]
    wait_for("a RayJobDeleted Event", lambda: "RayJobDeleted" in event_reasons(
        kube, namespace, name))
    time.sleep(2)
    assert get_rayjob(api, namespace, name) is None  # not recreated


def test_delete_collects_the_children(kube, api, operator, namespace):
    name = "collected"
    apply_dj(kube, make_dj(name=name, namespace=namespace))
    wait_for("the RayJob", lambda: get_rayjob(api, namespace, name))
    children = [("serviceaccount", f"{name}-reporter"), ("role", f"{name}-reporter"),
                ("rolebinding", f"{name}-reporter"), ("rayjob", name)]
    for kind, child in children:
        kube.kubectl("get", kind, child, "-n", namespace)
    assert not get_dj(api, namespace, name)["metadata"].get("finalizers")  # no operator needed
    operator.kill()  # deletion must not depend on the operator
    try:
        kube.kubectl("delete", "dj", name, "-n", namespace)
    finally:
        operator.start()
    for kind, child in children:
        wait_for(f"{kind}/{child} garbage-collected", lambda k=kind, c=child: kube.kubectl(
            "get", k, c, "-n", namespace, check=False).returncode != 0, timeout=60)


def test_restart_mid_flight_makes_exactly_one_rayjob_each(kube, api, operator, namespace):
    docs = [make_dj(name=f"restart-{i:02d}", namespace=namespace) for i in range(30)]
    kube.kubectl("create", "-f", "-", input=yaml.safe_dump_all(docs))
    wait_for("some RayJobs", lambda: list_rayjobs(api, namespace), interval=0.05)
    operator.kill()  # SIGKILL, mid-flight: some created, some not, some statuses unwritten
    made_before = len(list_rayjobs(api, namespace))
    operator.start()
    wait_for("30 RayJobs", lambda: len(list_rayjobs(api, namespace)) == 30, timeout=120)
    for doc in docs:
        wait_phase(api, namespace, doc["metadata"]["name"], "Pending", timeout=60)
    time.sleep(3)
    rayjobs = list_rayjobs(api, namespace)
    owners = [rj["metadata"]["ownerReferences"][0]["name"] for rj in rayjobs]
    assert sorted(owners) == sorted(d["metadata"]["name"] for d in docs)  # one each, no extra
    print(f"\n[restart] RayJobs before the kill: {made_before}/30; after restart: 30")


def watch_added(kube, group: str, version: str, ns: str, plural: str, n: int,
                seen: dict[str, float]) -> threading.Thread:
    """Record when each object is first seen (client clock, ms), from a watch started now."""
    from kubernetes import client, watch

    api = client.CustomObjectsApi(kube.api_client())
    rv = api.list_namespaced_custom_object(group, version, ns, plural)["metadata"][
        "resourceVersion"]

    def run() -> None:
        stream = watch.Watch()
        for event in stream.stream(api.list_namespaced_custom_object, group, version, ns, plural,
                                   resource_version=rv, timeout_seconds=300):
            seen.setdefault(event["object"]["metadata"]["name"], time.time())
            if len(seen) >= n:
                stream.stop()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_hundred_detectionjobs_at_once(kube, api, operator, namespace, record_property):
    n = 100
    docs = [make_dj(name=f"scale-{i:03d}", namespace=namespace) for i in range(n)]
    dj_seen: dict[str, float] = {}
    rj_seen: dict[str, float] = {}
    watchers = [watch_added(kube, GROUP, VERSION, namespace, PLURAL, n, dj_seen),
                watch_added(kube, *RAY[:2], namespace, RAY[2], n, rj_seen)]
    start = time.time()
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))  # one kubectl, 100 objects
    applied = time.time()
    for thread in watchers:
        thread.join(timeout=300)
    assert len(dj_seen) == n and len(rj_seen) == n, (len(dj_seen), len(rj_seen))
    latencies = sorted(rj_seen[name] - dj_seen[name] for name in dj_seen)
    result = {
        "detectionjobs": n,
        "kubectl_apply_s": round(applied - start, 2),
        "apply_start_to_last_rayjob_s": round(max(rj_seen.values()) - start, 2),
        "detectionjob_to_rayjob_s": {  # per object, both seen through watches (client clock)
            "p50": round(statistics.median(latencies), 3),
            "p95": round(latencies[int(0.95 * (n - 1))], 3),
            "max": round(latencies[-1], 3),
        },
    }
    record_property("scale", json.dumps(result))
    out = ROOT / "results"
    out.mkdir(exist_ok=True)
    (out / "operator-100-detectionjobs.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n[scale] {json.dumps(result)}")
    rayjobs = list_rayjobs(api, namespace)
    assert len(rayjobs) == n
    assert sorted(rj["metadata"]["ownerReferences"][0]["name"] for rj in rayjobs) == sorted(
        d["metadata"]["name"] for d in docs)
    for doc in docs[::10]:
        wait_phase(api, namespace, doc["metadata"]["name"], "Pending", "RayJobCreated")
    metrics = operator.metrics()
    assert "detectionjob_rayjob_create_latency_seconds_count" in metrics
    assert 'detectionjob_jobs{phase="Pending"}' in metrics


def test_metrics_liveness_and_json_logs(operator):
    assert operator.get(operator.liveness_port, "/healthz")[0] == 200
    metrics = operator.metrics()
    for name in ("detectionjob_jobs", "detectionjob_reconcile_errors_total",
                 "detectionjob_rayjob_create_latency_seconds"):
        assert name in metrics
    records = operator.log_records()
    assert records and all("message" in r and "severity" in r for r in records)
    created = [r for r in records if r.get("rayjob")]
    assert created and created[0]["object"]["kind"] == "DetectionJob"
    transitions = [r for r in records if r.get("phase")]
    assert transitions and {"namespace", "name", "uid"} <= set(transitions[0]["object"])


def test_namespaced_role_is_enough_for_explicit_namespaces(kube, api, tmp_path):
    """With --namespace NS (no glob), the chart's Role for watchNamespaces=[NS] suffices: no
    cluster access."""
    ns = "djnsrole-e2e"  # outside the module operator's dje2e-* glob
    kube.create_namespace(ns)
    rules = chart_rules(f"watchNamespaces={{{ns}}}")
    assert not {"customresourcedefinitions", "namespaces"} & {
        res for r in rules for res in r["resources"]}
    objs = [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": "detectionjob-operator", "namespace": ns}, "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": "detectionjob-operator", "namespace": ns},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                         "name": "detectionjob-operator"},
             "subjects": [{"kind": "ServiceAccount", "name": "detectionjob-operator",
                           "namespace": ns}]}]
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs))
    kubeconfig = kube.serviceaccount_kubeconfig(ns, "detectionjob-operator")
    op = Operator(kubeconfig, [ns], tmp_path / "operator.log").start()
    try:
        apply_dj(kube, make_dj(name="scoped", namespace=ns))
        wait_for("the RayJob", lambda: get_rayjob(api, ns, "scoped"))
        wait_phase(api, ns, "scoped", "Pending", "RayJobCreated")
        kube.kubectl("delete", "rayjob", "scoped", "-n", ns)
        wait_phase(api, ns, "scoped", "Failed", "RayJobDeleted")
        denied = [r["message"] for r in op.log_records()
                  if r.get("severity") in ("warn", "error", "fatal")
                  and ("403" in r["message"] or "orbidden" in r["message"])]
        assert not denied, denied
    finally:
        op.stop()


def peering_rbac_docs() -> list[dict]:
    """The operator ServiceAccount's kopf peering rights (ClusterRole + binding): the kopfpeerings
    rule of the chart's Role for a namespaced operator with replicas."""
    rules = [r for r in chart_rules("replicaCount=2", "watchNamespaces={ns}")
             if r["apiGroups"] == ["kopf.dev"]]
    assert [r["resources"] for r in rules] == [["kopfpeerings"]], rules
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "dje2e-operator-peering"}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "dje2e-operator-peering"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "dje2e-operator-peering"},
         "subjects": [{"kind": "ServiceAccount", "name": "detectionjob-operator",
                       "namespace": SYSTEM_NS}]}
    ]


def test_peering_one_active_replica(kube, api, operator_kubeconfig, tmp_path, kuberay):
    """--peering: two replicas, the higher priority one works; when it stops, the other does."""
    ns = "djpeering-e2e"  # outside the module operator's dje2e-* glob
    kube.create_namespace(ns)
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                 str(ROOT / "manifests" / "base" / "kopf.dev_peerings.yaml"))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 "crd/kopfpeerings.kopf.dev")
    peering_rbac = [
        *peering_rbac_docs(),
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
         "metadata": {"name": "detectionjob", "namespace": ns}},
    ]
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(peering_rbac))
    active = Operator(operator_kubeconfig, [ns], tmp_path / "a.log",
                      ["--peering", "detectionjob", "--priority", "100"]).start()
    standby = Operator(operator_kubeconfig, [ns], tmp_path / "b.log",
                       ["--peering", "detectionjob", "--priority", "10"]).start()
    try:
        # No wait needed: with --peering, kopf starts every replica paused until it has read the
        # peering record and found itself the highest-priority live peer.
        kube.kubectl("create", "-f", "-", input=yaml.safe_dump_all(
            [make_dj(name=f"ha-{i}", namespace=ns) for i in range(5)]))

        def created(op: Operator) -> int:
            return len([r for r in op.log_records() if "created RayJob" in r.get("message", "")])

        # The operator logs a creation after the API answers it: wait for the log, not the object.
        wait_for("the active replica to create 5 RayJobs", lambda: created(active) == 5)
        assert len(list_rayjobs(api, ns)) == 5
        assert created(standby) == 0
        active.stop()  # graceful: its peering record goes away
        kube.kubectl("create", "-f", "-", input=yaml.safe_dump_all(
            [make_dj(name=f"ha-{i}", namespace=ns) for i in range(5, 8)]))
        # Even an ungraceful exit would be over within the peering lifetime (60 s).
        wait_for("the standby to take over", lambda: created(standby) == 3, timeout=120)
        assert len(list_rayjobs(api, ns)) == 8
    finally:
        active.stop()
        standby.stop()


def test_identical_replicas_do_not_tie(kube, api, operator_kubeconfig, tmp_path, kuberay):
    """Two replicas with the same flags (a Deployment): random priorities, one of them works."""
    ns = "djpeering-same-e2e"
    kube.create_namespace(ns)
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                 str(ROOT / "manifests" / "base" / "kopf.dev_peerings.yaml"))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 "crd/kopfpeerings.kopf.dev")
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
         "metadata": {"name": "detectionjob", "namespace": ns}}))
    # Peering RBAC: from test_peering_one_active_replica's ClusterRole (same ServiceAccount).
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(peering_rbac_docs()))
    replicas = [Operator(operator_kubeconfig, [ns], tmp_path / f"r{i}.log",
                         ["--peering", "detectionjob"]).start() for i in range(2)]
    try:
        kube.kubectl("create", "-f", "-", input=yaml.safe_dump_all(
            [make_dj(name=f"same-{i}", namespace=ns) for i in range(4)]))

        def created() -> list[int]:
            return [len([r for r in op.log_records() if r.get("rayjob")]) for op in replicas]

        wait_for("4 RayJobs created", lambda: sum(created()) >= 4)
        assert len(list_rayjobs(api, ns)) == 4
        assert sorted(created()) == [0, 4], created()
        assert not any("Pausing all operators" in op.log_tail(400) for op in replicas)
    finally:
        for op in replicas:
            op.stop()
