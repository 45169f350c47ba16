"""DetectionJob -> RayJob: every field and default."""

from __future__ import annotations

import json

import pytest
import yaml
from detectionjob_operator import translate
from detectionjob_operator.spec import parse
from detectionjob_operator.translate import Options, to_rayjob
from djtest import EXAMPLE, assert_accepted_by_kuberay, make_dj

from inference.options import DEFAULT_EXTENSIONS, from_json


def render(spec=None, options=None, **meta):
    return to_rayjob(parse(make_dj(spec, **meta)), options or Options())


def args_of(rayjob):
    env = json.loads(rayjob["spec"]["runtimeEnvYAML"])["env_vars"]
    return json.loads(env["DETECTIONJOB_ARGS"])


def head(rayjob):
    return rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]


def worker_group(rayjob):
    (group,) = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    return group


def test_defaults():
    rj = render()
    assert rj["apiVersion"] == "ray.io/v1" and rj["kind"] == "RayJob"
    assert rj["metadata"]["name"] == "dj" and rj["metadata"]["namespace"] == "team-a"
    assert "ownerReferences" not in rj["metadata"]  # no uid outside the cluster
    spec = rj["spec"]
    assert spec["entrypoint"] == "python -m inference run --args-json-env DETECTIONJOB_ARGS"
    assert spec["submissionMode"] == "K8sJobMode"
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] == 60
    assert spec["backoffLimit"] == 0
    assert spec["suspend"] is False
    assert "activeDeadlineSeconds" not in spec
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == "2.60.0"
    assert cluster["enableInTreeAutoscaling"] is False
    assert args_of(rj) == {
        "input": "s3://in/images/", "output": "s3://out/results/",
        "extensions": list(DEFAULT_EXTENSIONS), "model": "fasterrcnn_resnet50_fpn_v2",
        "weights": "DEFAULT", "score_threshold": 0.5, "precision": "fp32", "batch_size": 4,
        "num_gpus": 1.0, "workers": "1", "samples": 8, "resume": False, "limit": None,
        "retry_errors": False, "shard_size": 256, "max_failed_fraction": 0.1,
        "list_hidden": False, "allow_empty": False, "batch_timeout": None, "store_wait": 300,
        "evaluate_annotations": None, "cost_per_device_hour": None,
    }
    env = json.loads(spec["runtimeEnvYAML"])["env_vars"]
    assert env["DETECTIONJOB_STATUS_TARGET"] == "team-a/dj"


def test_head_has_no_gpus_and_runs_the_dashboard():
    h = head(render())
    assert h["rayStartParams"] == {"dashboard-host": "0.0.0.0", "num-cpus": "0", "num-gpus": "0"}
    (container,) = h["template"]["spec"]["containers"]
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "8Gi"},
                                      "limits": {"cpu": "2", "memory": "8Gi"}}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "gcs": 6379, "dashboard": 8265, "client": 10001}
    assert h["template"]["spec"]["serviceAccountName"] == "dj-reporter"
    h = head(render({"head": {"cpus": "500m", "memory": "2Gi"}}))
    assert h["template"]["spec"]["containers"][0]["resources"]["limits"] == {
        "cpu": "500m", "memory": "2Gi"}


def test_fixed_worker_group():
    rj = render({"workers": {"replicas": 3, "gpusPerWorker": 2, "cpusPerWorker": "12",
                             "memory": "64Gi"}})
    group = worker_group(rj)
    assert group["groupName"] == "gpu-workers"
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (3, 3, 3)
    assert rj["spec"]["rayClusterSpec"]["enableInTreeAutoscaling"] is False
    pod = group["template"]["spec"]
    (container,) = pod["containers"]
    want = {"cpu": "12", "memory": "64Gi", "nvidia.com/gpu": "2"}
    assert container["resources"] == {"requests": want, "limits": want}
    assert pod["automountServiceAccountToken"] is False
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert args_of(rj)["workers"] == "6" and args_of(rj)["num_gpus"] == 1.0


def test_autoscaling_worker_group():
    rj = render({"workers": {"minReplicas": 1, "maxReplicas": 4}})
    group = worker_group(rj)
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (1, 1, 4)
    assert rj["spec"]["rayClusterSpec"]["enableInTreeAutoscaling"] is True
    assert args_of(rj)["workers"] == "1:4"
    rj = render({"workers": {"replicas": 2, "minReplicas": 0, "maxReplicas": 8,
                             "gpusPerWorker": 2}})
    group = worker_group(rj)
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (2, 0, 8)
    assert args_of(rj)["workers"] == "1:16"


@pytest.mark.parametrize(("workers", "expected"), [
    ({}, (1, 1, 1)),
    ({"replicas": 4}, (4, 4, 4)),
    ({"minReplicas": 2}, (2, 2, 2)),
    ({"maxReplicas": 4}, (1, 1, 4)),
    ({"replicas": 3, "maxReplicas": 5}, (3, 3, 5)),
    ({"replicas": 3, "minReplicas": 1}, (3, 1, 3)),
    ({"minReplicas": 0, "maxReplicas": 2}, (0, 0, 2)),
])
def test_replica_defaults(workers, expected):
    group = worker_group(render({"workers": workers}))
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == expected


def test_cpu_only_workers():
    rj = render({"workers": {"replicas": 2, "gpusPerWorker": 0}})
    limits = worker_group(rj)["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "8", "memory": "32Gi"}
    assert args_of(rj)["num_gpus"] == 0.0 and args_of(rj)["workers"] == "2"


def test_gpu_resource_node_selector_tolerations():
    tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                   {"key": "pool", "operator": "Equal", "value": "a100", "effect": "NoExecute",
                    "tolerationSeconds": 30}]
    rj = render({"workers": {"gpuResource": "amd.com/gpu",
                             "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
                             "tolerations": tolerations}})
    pod = worker_group(rj)["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["amd.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert pod["tolerations"] == tolerations
    assert "nodeSelector" not in head(rj)["template"]["spec"]


def test_credentials_only_by_secret_ref():
    rj = render({"input": {"secretRef": {"name": "in-creds"}},
                 "output": {"secretRef": {"name": "out-creds"}}})
    for pod in (head(rj)["template"]["spec"], worker_group(rj)["template"]["spec"]):
        assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "in-creds"}},
                                                   {"secretRef": {"name": "out-creds"}}]
        assert "env" not in pod["containers"][0]
    same = render({"input": {"secretRef": {"name": "s3"}}, "output": {"secretRef": {"name": "s3"}}})
    assert head(same)["template"]["spec"]["containers"][0]["envFrom"] == [
        {"secretRef": {"name": "s3"}}]
    assert "envFrom" not in head(render())["template"]["spec"]["containers"][0]


def test_pvc_input_and_output():
    rj = render({"input": {"uri": None, "pvc": {"claimName": "images", "path": "voc/2012/"}},
                 "output": {"uri": None, "pvc": {"claimName": "results"}}})
    args = args_of(rj)
    assert args["input"] == "/mnt/detectionjob/input/voc/2012"
    assert args["output"] == "/mnt/detectionjob/output"
    for pod in (head(rj)["template"]["spec"], worker_group(rj)["template"]["spec"]):
        assert pod["volumes"][1:] == [
            {"name": "input", "persistentVolumeClaim": {"claimName": "images", "readOnly": True}},
            {"name": "output", "persistentVolumeClaim": {"claimName": "results",
                                                         "readOnly": False}}]
        assert pod["containers"][0]["volumeMounts"][1:] == [
            {"name": "input", "mountPath": "/mnt/detectionjob/input", "readOnly": True},
            {"name": "output", "mountPath": "/mnt/detectionjob/output", "readOnly": False}]


def test_job_options():
    rj = render({"input": {"fileExtensions": ["JPG", "webp"], "limit": 100},
                 "output": {"mode": "resume", "samples": 0},
                 "model": {"name": "retinanet_resnet50_fpn_v2", "weights": "s3://w/model.pt",
                           "scoreThreshold": 0.9, "precision": "bf16"},
                 "batchSize": 16})
    args = args_of(rj)
    assert args["extensions"] == ["JPG", "webp"] and args["limit"] == 100
    assert args["resume"] is True and args["samples"] == 0
    assert (args["model"], args["weights"], args["score_threshold"], args["precision"]) == (
        "retinanet_resnet50_fpn_v2", "s3://w/model.pt", 0.9, "bf16")
    assert args["batch_size"] == 16


def test_batch_size_auto_reaches_the_job_as_auto():
    """``spec.batchSize: auto`` is ``--batch-size auto`` in the job (None: found at start), not the
    default 4 a JSON null would give."""
    rj = render({"batchSize": "auto"})
    assert args_of(rj)["batch_size"] == "auto"
    text = json.loads(rj["spec"]["runtimeEnvYAML"])["env_vars"]["DETECTIONJOB_ARGS"]
    assert from_json(text, "DETECTIONJOB_ARGS").batch_size is None
    assert from_json(json.dumps({"batch_size": 8, "input": "x", "output": "y"}), "t").batch_size == 8
    with pytest.raises(ValueError, match="--batch-size: cannot read 'many'"):
        from_json(json.dumps({"batch_size": "many"}), "t")


def test_scale_and_failure_options():
    args = args_of(render({"output": {"mode": "resume", "retryErrors": True, "shardSize": 1000},
                           "failurePolicy": {"maxFailedFraction": 0.5}}))
    assert (args["resume"], args["retry_errors"], args["shard_size"], args["max_failed_fraction"]) == (
        True, True, 1000, 0.5)
    # retryErrors means nothing when the output is overwritten
    assert args_of(render({"output": {"retryErrors": True}}))["retry_errors"] is False


def test_manifest_inputs():
    on_s3 = render({"input": {"uri": None, "manifest": {"uri": "s3://in/lists/train.csv",
                                                         "column": "image"},
                              "secretRef": {"name": "creds"}}})
    args = args_of(on_s3)
    assert "input" not in args
    assert (args["input_list"], args["input_list_column"]) == ("s3://in/lists/train.csv", "image")
    on_pvc = render({"input": {"uri": None, "pvc": {"claimName": "data", "path": "voc"},
                               "manifest": {"path": "lists/val.txt"}}})
    args = args_of(on_pvc)
    assert args["input_list"] == "/mnt/detectionjob/input/lists/val.txt"
    assert args["input_list_column"] is None and "input" not in args


def test_lifecycle_fields():
    rj = render({"activeDeadlineSeconds": 3600, "backoffLimit": 2, "ttlSecondsAfterFinished": 0,
                 "rayVersion": "2.41.0", "image": "example.com/ray:x"})
    spec = rj["spec"]
    assert spec["activeDeadlineSeconds"] == 3600 and spec["backoffLimit"] == 2
    assert spec["ttlSecondsAfterFinished"] == 0
    assert spec["rayClusterSpec"]["rayVersion"] == "2.41.0"
    assert head(rj)["template"]["spec"]["containers"][0]["image"] == "example.com/ray:x"
    assert worker_group(rj)["template"]["spec"]["containers"][0]["image"] == "example.com/ray:x"


def test_suspend_and_kueue():
    assert render({"suspend": True})["spec"]["suspend"] is True
    queued = render({"queueName": "gpu-queue"})
    assert queued["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert queued["spec"]["suspend"] is True  # Kueue unsuspends it on admission
    assert "kueue.x-k8s.io/queue-name" not in render()["metadata"]["labels"]


def test_owner_reference_and_labels():
    rj = render(uid="1234-abcd", generation=1)
    assert rj["metadata"]["ownerReferences"] == [{
        "apiVersion": "detectionjob.dev/v1alpha1", "kind": "DetectionJob", "name": "dj",
        "uid": "1234-abcd", "controller": True, "blockOwnerDeletion": True}]
    assert rj["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "detectionjob-operator",
        "app.kubernetes.io/name": "detectionjob", "detectionjob.dev/name": "dj"}
    assert rj["metadata"]["annotations"] == {"detectionjob.dev/detectionjob": "dj"}


def test_reporter_objects_let_the_job_patch_only_its_own_status():
    rj = render(uid="1234-abcd")
    account = head(rj)["template"]["spec"]["serviceAccountName"]
    sa, role, binding = translate.reporter_objects("dj", "team-a", "1234-abcd")
    assert [o["kind"] for o in (sa, role, binding)] == ["ServiceAccount", "Role", "RoleBinding"]
    assert {o["metadata"]["name"] for o in (sa, role, binding)} == {account}
    assert {o["metadata"]["namespace"] for o in (sa, role, binding)} == {"team-a"}
    for obj in (sa, role, binding):  # garbage-collected with the DetectionJob, like the RayJob
        assert obj["metadata"]["ownerReferences"] == rj["metadata"]["ownerReferences"]
    assert role["rules"] == [{"apiGroups": ["detectionjob.dev"], "resources": ["detectionjobs/status"],
                              "resourceNames": ["dj"], "verbs": ["patch"]}]
    assert binding["roleRef"]["name"] == account
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "team-a"}]


def test_no_progress_option():
    rj = render(options=Options(progress=False))
    assert "serviceAccountName" not in head(rj)["template"]["spec"]
    assert "DETECTIONJOB_STATUS_TARGET" not in json.loads(rj["spec"]["runtimeEnvYAML"])["env_vars"]


@pytest.mark.parametrize("name", [
    "dj", "a" * 47, "a" * 48, "a" * 253, "voc.2012", "1-starts-with-digit", "x.y.z-" + "q" * 60,
    "abc-", "a--b"])
def test_rayjob_name_is_deterministic_and_valid(name):
    import re
    got = translate.rayjob_name(name)
    assert got == translate.rayjob_name(name)
    assert len(got) <= 47 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", got)
    assert len(translate.reporter_name(name)) <= 63
    assert len(translate.name_label(name)) <= 63
    if len(name) <= 47 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name):
        assert got == name


def test_distinct_names_do_not_collide():
    names = ["voc.2012", "voc-2012", "a" * 48, "a" * 49, "1abc", "dj-1abc"]
    assert len({translate.rayjob_name(n) for n in names}) == len(names)


def test_pure_and_deterministic():
    doc = make_dj({"workers": {"minReplicas": 1, "maxReplicas": 3}}, uid="u")
    assert to_rayjob(parse(doc)) == to_rayjob(parse(doc))
    assert yaml.safe_dump(to_rayjob(parse(doc))) == yaml.safe_dump(to_rayjob(parse(doc)))


def test_example_is_accepted_by_kuberay(kuberay_rayjob_schema):
    doc = yaml.safe_load(EXAMPLE.read_text())
    dj = parse(doc)
    assert dj.spec.workers.replicas == 4 and translate.gpus(dj) == 4
    assert_accepted_by_kuberay(to_rayjob(dj), kuberay_rayjob_schema)


def test_every_option_is_accepted_by_kuberay(kuberay_rayjob_schema):
    rj = render({
        "input": {"uri": None, "pvc": {"claimName": "images", "path": "a"},
                  "secretRef": {"name": "s"}, "limit": 5},
        "output": {"secretRef": {"name": "t"}},
        "workers": {"replicas": 2, "minReplicas": 1, "maxReplicas": 3,
                    "nodeSelector": {"gpu": "yes"},
                    "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule",
                                     "tolerationSeconds": 5}]},
        "queueName": "q", "suspend": True, "activeDeadlineSeconds": 10, "backoffLimit": 3,
    }, uid="u")
    assert_accepted_by_kuberay(rj, kuberay_rayjob_schema)


def test_kuberay_rules():
    """Rules KubeRay's controller enforces beyond its schema (ValidateRayJobSpec, v1.7.0)."""
    for spec in ({}, {"suspend": True, "ttlSecondsAfterFinished": 600},
                 {"workers": {"minReplicas": 0, "maxReplicas": 2}, "queueName": "q"}):
        rj = render(spec)
        s = rj["spec"]
        if s["suspend"] or s["ttlSecondsAfterFinished"] > 0:
            assert s["shutdownAfterJobFinishes"] is True
        assert s.get("activeDeadlineSeconds", 1) > 0 and s["backoffLimit"] >= 0
        group = worker_group(rj)
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert head(rj)["template"]["spec"]["containers"]
        yaml.safe_load(s["runtimeEnvYAML"])  # KubeRay requires valid YAML
        assert len(rj["metadata"]["name"]) <= 47


def test_every_pod_names_its_detectionjob_without_the_queue_label():
    rj = render({"queueName": "team-q"}, name="my-job")
    templates = [head(rj)["template"], worker_group(rj)["template"],
                 rj["spec"]["submitterPodTemplate"]]
    for template in templates:
        meta = template["metadata"]
        assert meta["annotations"] == {translate.OWNER_ANNOTATION: "my-job"}
        assert meta["labels"][translate.NAME_LABEL] == "my-job"
        assert meta["labels"][translate.MANAGED_BY_LABEL] == translate.MANAGED_BY
        assert translate.KUEUE_QUEUE_LABEL not in meta["labels"]
    assert rj["metadata"]["labels"][translate.KUEUE_QUEUE_LABEL] == "team-q"


def test_ray_pods_get_a_memory_backed_dev_shm():
    rj = render()
    for template in (head(rj)["template"], worker_group(rj)["template"]):
        spec = template["spec"]
        (shm,) = [v for v in spec["volumes"] if v["name"] == translate.SHM_VOLUME]
        assert shm == {"name": translate.SHM_VOLUME, "emptyDir": {"medium": "Memory"}}
        (mount,) = [m for m in spec["containers"][0]["volumeMounts"]
                    if m["name"] == translate.SHM_VOLUME]
        assert mount["mountPath"] == "/dev/shm"


def test_every_option_passed_through_is_a_field_of_the_crd():
    """inference.options names the DetectionJob field of each pass-through option by its path:
    each path is a field of the CRD's spec, and the RayJob carries its (defaulted) value."""
    from detectionjob_operator.crd_schema import spec_schema

    from inference.options import crd_paths

    args = args_of(render({"model": {"scoreThreshold": 0.25}, "output": {"samples": 2}}))
    for name, path in crd_paths().items():
        node = spec_schema()
        for key in path.split("."):
            node = node["properties"][key]
        assert node.get("type") or node.get("x-kubernetes-int-or-string"), (name, path)
        assert name in args, name
    assert (args["score_threshold"], args["samples"]) == (0.25, 2)
