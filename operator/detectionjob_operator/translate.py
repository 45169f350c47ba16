"""DetectionJob -> KubeRay RayJob (ray.io/v1): one pure function, :func:`to_rayjob`.

No user-provided string reaches a shell. KubeRay runs the entrypoint, and the runtime environment
as JSON, through ``bash -c`` inside a Go-quoted (double-quoted) string, where ``$(...)``, ``$VAR``
and backticks still expand. So:

* the entrypoint is a fixed string: ``python -m inference run --args-json-env DETECTIONJOB_ARGS``;
* the job's options travel as JSON in the ``DETECTIONJOB_ARGS`` env var of ``runtimeEnvYAML``,
  encoded as pure ASCII with ``$`` and backtick written as ``\\u0024``/``\\u0060`` JSON escapes,
  so the runtime env contains no character the shell treats specially inside double quotes
  besides the ``"`` and ``\\`` that KubeRay's quoting escapes;
* ``rayStartParams`` (which KubeRay turns into the ``ray start`` command line) hold only
  constants.

The remaining user strings (image, secret and claim names, node selector, tolerations, the GPU
resource name) land in structured Pod fields that are never run through a shell.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from detectionjob_operator.spec import INPUT_MOUNT, OUTPUT_MOUNT, DetectionJob, StorageSpec
from inference.detectionjob_api import API_VERSION, GROUP, KIND, PLURAL
from inference.options import crd_paths, to_json

# The RayJob resource (KubeRay's ray.io/v1): the only place its group, version and plural are written.
RAYJOB_GROUP, RAYJOB_VERSION, RAYJOB_PLURAL = "ray.io", "v1", "rayjobs"
RAYJOB_API_VERSION = f"{RAYJOB_GROUP}/{RAYJOB_VERSION}"
ENTRYPOINT = "python -m inference run --args-json-env DETECTIONJOB_ARGS"
ARGS_ENV = "DETECTIONJOB_ARGS"
STATUS_TARGET_ENV = "DETECTIONJOB_STATUS_TARGET"
WORKER_GROUP = "gpu-workers"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "detectionjob-operator"
NAME_LABEL = "detectionjob.dev/name"
OWNER_ANNOTATION = "detectionjob.dev/detectionjob"
MAX_RAYJOB_NAME = 47  # KubeRay v1.7.0: MaxRayClusterNameLength (53) - 6
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?\Z")


@dataclass(frozen=True)
class Options:
    """Operator-level choices that are not part of a DetectionJob."""

    progress: bool = True  # run the head as the job's reporter ServiceAccount (see progress.py)


def _digest(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def rayjob_name(name: str) -> str:
    """The RayJob's name: the DetectionJob's, or a DNS-1035 label derived from it with a hash."""
    if len(name) <= MAX_RAYJOB_NAME and _DNS1035.match(name):
        return name
    base = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if not base[:1].isalpha():
        base = f"dj-{base}"
    base = base[: MAX_RAYJOB_NAME - 9].rstrip("-")
    return f"{base}-{_digest(name)}"


def reporter_name(name: str) -> str:
    """Name of the job's ServiceAccount, Role and RoleBinding (progress reporting)."""
    return f"{rayjob_name(name)}-reporter"


def name_label(name: str) -> str:
    """A label value for the DetectionJob's name (label values stop at 63 characters)."""
    return name if len(name) <= 63 else f"{name[:54].rstrip('-.')}-{_digest(name)}"


def args_json(dj: DetectionJob) -> str:
    """The ``detectionjob run`` options as shell-inert JSON (``inference.options.to_json``).

    Options that pass a DetectionJob field through unchanged are read by their path
    (``inference.options.crd_paths``: a new one needs no code here); the rest are derived.
    """
    spec = dj.spec
    workers = spec.workers
    actors_per_worker = max(1, workers.gpus_per_worker)
    if workers.autoscaling:
        pool = f"{max(1, workers.min_replicas * actors_per_worker)}:" \
               f"{workers.max_replicas * actors_per_worker}"
    else:
        pool = str(workers.max_replicas * actors_per_worker)
    return to_json({
        **{name: _field(dj.spec_values, path) for name, path in crd_paths().items()},
        **spec.input.job_args(),
        "output": spec.output.location.job_uri(OUTPUT_MOUNT),
        "num_gpus": 1.0 if workers.gpus_per_worker > 0 else 0.0,
        "workers": pool,
        "resume": spec.output.mode == "resume",
        "retry_errors": spec.output.mode == "resume" and spec.output.retry_errors,
    })


def _field(spec: Mapping[str, Any], path: str) -> Any:
    """The value at ``path`` (``"model.name"``) of a defaulted spec; None where it is absent."""
    value: Any = spec
    for key in path.split("."):
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def runtime_env_yaml(dj: DetectionJob, options: Options) -> str:
    """``runtimeEnvYAML``: JSON (valid YAML) whose env vars reach the entrypoint and workers."""
    env = {ARGS_ENV: args_json(dj)}
    if options.progress:
        env[STATUS_TARGET_ENV] = f"{dj.namespace}/{dj.name}"
    return json.dumps({"env_vars": env}, ensure_ascii=True, sort_keys=True)


def _env_from(*locations: StorageSpec) -> list[dict[str, Any]]:
    names = sorted({loc.secret_name for loc in locations if loc.secret_name})
    return [{"secretRef": {"name": name}} for name in names]


def _volumes(dj: DetectionJob) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    # Ray's object store lives in /dev/shm; a container's own is 64 MiB, so Ray would fall back
    # to disk. A memory-backed emptyDir (counted in the Pod's memory limit), as KubeRay advises.
    volumes: list[dict[str, Any]] = [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}}]
    mounts: list[dict[str, Any]] = [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}]
    for vol, loc, mount, read_only in (
        ("input", dj.spec.input.location, INPUT_MOUNT, True),
        ("output", dj.spec.output.location, OUTPUT_MOUNT, False),
    ):
        if loc.claim_name:
            volumes.append({"name": vol, "persistentVolumeClaim": {
                "claimName": loc.claim_name, "readOnly": read_only}})
            mounts.append({"name": vol, "mountPath": mount, "readOnly": read_only})
    return volumes, mounts


# Every Pod of the job passes the "restricted" Pod Security Standard. The official Ray images run
# as user "ray" (uid 1000, group users = 100); a numeric uid lets the kubelet verify runAsNonRoot.
POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 100, "fsGroup": 100,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
}
SUBMITTER_CONTAINER = "ray-job-submitter"
SHM_VOLUME = "dev-shm"


def _copy(template: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(template))  # a deep copy: the caller may mutate it



def _container(name: str, image: str, resources: dict[str, str], env_from: list,
               mounts: list, ports: list | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "securityContext": _copy(CONTAINER_SECURITY_CONTEXT),
    }
    if ports:
        container["ports"] = ports
    if env_from:
        container["envFrom"] = [{"secretRef": dict(e["secretRef"])} for e in env_from]
    if mounts:
        container["volumeMounts"] = [dict(m) for m in mounts]
    return container


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    """The controller owner reference of every child object to DetectionJob ``name``."""
    return {"apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


def reporter_objects(name: str, namespace: str, uid: str) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding that let DetectionJob ``name``'s job patch its status
    (only that object's status subresource)."""
    account = reporter_name(name)
    common = {"name": account, "namespace": namespace,
              "labels": {"app.kubernetes.io/managed-by": "detectionjob-operator",
                         "app.kubernetes.io/component": "progress-reporter"},
              "ownerReferences": [owner_reference(name, uid)]}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _copy(common)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _copy(common),
         "rules": [{"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"],
                    "resourceNames": [name], "verbs": ["patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": _copy(common),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]},
    ]


def to_rayjob(dj: DetectionJob, options: Options | None = None) -> dict[str, Any]:
    """The RayJob that runs ``dj`` (pure: the same DetectionJob always gives the same RayJob).

    The owner reference is present when ``dj`` came from the API server (it has a uid).
    """
    options = options or Options()
    spec = dj.spec
    workers = spec.workers
    labels = {
        MANAGED_BY_LABEL: MANAGED_BY,
        "app.kubernetes.io/name": "detectionjob",
        NAME_LABEL: name_label(dj.name),
    }
    # Every Pod (head, workers, submitter) carries the labels and names its DetectionJob, so the
    # operator can say why a Pod cannot start (see status.pod_problem).
    # (Without Kueue's queue label: Kueue admits the RayJob, not its Pods one by one.)
    pod_metadata = {"labels": dict(labels), "annotations": {OWNER_ANNOTATION: dj.name}}
    head_pod, worker_pod, submitter_pod = _pod_specs(dj, options)

    if spec.queue_name:
        labels[KUEUE_QUEUE_LABEL] = spec.queue_name
    metadata: dict[str, Any] = {
        "name": rayjob_name(dj.name),
        "namespace": dj.namespace,
        "labels": labels,
        "annotations": {OWNER_ANNOTATION: dj.name},
    }
    if dj.uid:
        metadata["ownerReferences"] = [owner_reference(dj.name, dj.uid)]

    rayjob_spec: dict[str, Any] = {
        "entrypoint": ENTRYPOINT,
        "runtimeEnvYAML": runtime_env_yaml(dj, options),
        "submissionMode": "K8sJobMode",
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": spec.ttl_seconds_after_finished,
        "backoffLimit": spec.backoff_limit,
        # Kueue admits a queued RayJob by unsuspending it, so it starts suspended.
        "suspend": spec.suspend or bool(spec.queue_name),
        "submitterPodTemplate": {"metadata": _copy(pod_metadata), "spec": submitter_pod},
        "rayClusterSpec": {
            "rayVersion": spec.ray_version,
            "enableInTreeAutoscaling": workers.autoscaling,
            "headGroupSpec": {
                # The head runs the driver and the dashboard, and no detection work.
                "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0", "num-gpus": "0"},
                "template": {"metadata": _copy(pod_metadata), "spec": head_pod},
            },
            "workerGroupSpecs": [{
                "groupName": WORKER_GROUP,
                "replicas": workers.replicas,
                "minReplicas": workers.min_replicas,
                "maxReplicas": workers.max_replicas,
                "rayStartParams": {},
                "template": {"metadata": _copy(pod_metadata), "spec": worker_pod},
            }],
        },
    }
    if workers.autoscaling:
        rayjob_spec["rayClusterSpec"]["autoscalerOptions"] = {
            "securityContext": _copy(CONTAINER_SECURITY_CONTEXT)}
    if spec.active_deadline_seconds is not None:
        rayjob_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    return {"apiVersion": RAYJOB_API_VERSION, "kind": "RayJob", "metadata": metadata,
            "spec": rayjob_spec}


def _pod_specs(dj: DetectionJob, options: Options) -> tuple[dict[str, Any], ...]:
    """The head's, a worker's and KubeRay's submitter's Pod specs: restricted, with the job's
    credentials (by Secret reference) and volumes where they are needed."""
    spec, workers = dj.spec, dj.spec.workers
    env_from = _env_from(spec.input.location, spec.output.location,
                         *([spec.evaluation] if spec.evaluation else []))
    volumes, mounts = _volumes(dj)
    head_pod: dict[str, Any] = {"containers": [_container(
        "ray-head", spec.image, {"cpu": spec.head.cpus, "memory": spec.head.memory},
        env_from, mounts,
        ports=[{"name": "gcs", "containerPort": 6379}, {"name": "dashboard", "containerPort": 8265},
               {"name": "client", "containerPort": 10001}],
    )]}
    if options.progress:
        head_pod["serviceAccountName"] = reporter_name(dj.name)
    worker_resources = {"cpu": workers.cpus, "memory": workers.memory}
    if workers.gpus_per_worker:
        worker_resources[workers.gpu_resource] = str(workers.gpus_per_worker)
    worker_pod: dict[str, Any] = {
        "containers": [_container("ray-worker", spec.image, worker_resources, env_from, mounts)],
        "automountServiceAccountToken": False,
    }
    if workers.node_selector:
        worker_pod["nodeSelector"] = dict(workers.node_selector)
    if workers.tolerations:
        worker_pod["tolerations"] = [dict(t) for t in workers.tolerations]
    # KubeRay's submitter Job (K8sJobMode) gets the same restricted Pod; KubeRay fills in its
    # command (`ray job submit ...`) because the container has none. It needs no API token.
    submitter_pod: dict[str, Any] = {
        "containers": [_container(SUBMITTER_CONTAINER, spec.image, {"cpu": "500m", "memory": "512Mi"},
                                  [], [])],
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
    }
    for pod in (head_pod, worker_pod, submitter_pod):
        pod["securityContext"] = _copy(POD_SECURITY_CONTEXT)
    for pod in (head_pod, worker_pod):
        pod["volumes"] = _copy({"v": volumes})["v"]
    return head_pod, worker_pod, submitter_pod


def gpus(dj: DetectionJob) -> int:
    """GPUs the job may use at most."""
    return dj.spec.workers.max_replicas * dj.spec.workers.gpus_per_worker
