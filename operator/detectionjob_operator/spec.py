"""A DetectionJob, validated and defaulted, as plain dataclasses.

:func:`parse` applies the CRD's OpenAPI schema (:mod:`.schema`), then re-states its CEL rules and
the checks the schema cannot express. Every problem is a :class:`~.schema.SpecError` naming the
field (``spec.workers.minReplicas``); nothing else is raised for any input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from detectionjob_operator.crd_schema import SpecError, spec_schema, validate
from inference.detectionjob_api import API_VERSION, KIND
from inference.model_config import unknown_model

INPUT_MOUNT = "/mnt/detectionjob/input"
OUTPUT_MOUNT = "/mnt/detectionjob/output"

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_QUANTITY = re.compile(r"(?P<num>([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(?P<suffix>[KMGTPE]i|[kMGTPE]|m)?\Z")

# CEL rules of the CRD that compare with the stored object (oldSelf); only the API server can
# check them. Every other rule message must be handled below (tests/operator check it).
TRANSITION_RULE_MARK = "is immutable; only spec.suspend may change"


@dataclass(frozen=True)
class StorageSpec:
    """An object-store prefix (``uri``) or a folder on a PersistentVolumeClaim."""

    uri: str | None = None
    claim_name: str | None = None
    path: str = ""
    secret_name: str | None = None

    def job_uri(self, mount: str) -> str:
        """The location as the job sees it: the URI, or the folder under the volume's mount."""
        if self.uri is not None:
            return self.uri
        return f"{mount}/{self.path}".rstrip("/") if self.path else mount


@dataclass(frozen=True)
class InputSpec:
    location: StorageSpec  # the prefix, the PVC folder, or (with a manifest) where the manifest is
    manifest: str | None = None  # the manifest's URI or path inside the PVC
    manifest_column: str | None = None

    def job_args(self) -> dict[str, Any]:
        """``input`` or ``input_list`` (+ column) as ``detectionjob run`` takes them."""
        if self.manifest is None:
            return {"input": self.location.job_uri(INPUT_MOUNT)}
        where = self.manifest if self.location.uri is not None else f"{INPUT_MOUNT}/{self.manifest}"
        return {"input_list": where, "input_list_column": self.manifest_column}


@dataclass(frozen=True)
class OutputSpec:
    location: StorageSpec
    mode: str = "overwrite"
    retry_errors: bool = False


@dataclass(frozen=True)
class WorkersSpec:
    replicas: int
    min_replicas: int
    max_replicas: int
    gpus_per_worker: int
    cpus: str
    memory: str
    gpu_resource: str
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas != self.max_replicas


@dataclass(frozen=True)
class HeadSpec:
    cpus: str
    memory: str


@dataclass(frozen=True)
class DetectionJobSpec:
    input: InputSpec
    output: OutputSpec
    workers: WorkersSpec
    head: HeadSpec
    image: str
    ray_version: str
    queue_name: str | None
    suspend: bool
    active_deadline_seconds: int | None
    backoff_limit: int
    ttl_seconds_after_finished: int
    evaluation: StorageSpec | None = None  # spec.evaluation.annotations: its Secret reaches the job


@dataclass(frozen=True)
class DetectionJob:
    name: str
    namespace: str
    spec: DetectionJobSpec
    uid: str | None = None
    generation: int | None = None
    # The spec as the API server stores it (defaults applied): the job options that pass through
    # unchanged are read from it by their path (inference.options.crd_paths).
    spec_values: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


def quantity(value: int | str, path: str) -> Decimal:
    """A Kubernetes quantity (the subset the CRD allows) as a number; must be positive."""
    text = str(value)
    match = _QUANTITY.match(text)
    if not match:
        raise SpecError(path, f"{text!r} is not a quantity such as 8, 500m or 32Gi")
    try:
        number = Decimal(match["num"])
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise SpecError(path, f"{text!r} is not a quantity") from exc
    scale = {None: 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
             "P": 10**15, "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
             "Pi": 2**50, "Ei": 2**60}[match["suffix"]]
    amount = number * scale
    if amount <= 0:
        raise SpecError(path, f"must be more than 0, not {text!r}")
    return amount


def _storage(raw: Mapping[str, Any], path: str) -> StorageSpec:
    secret = raw.get("secretRef", {}).get("name")
    manifest = raw.get("manifest", {})
    if path == "spec.input" and "uri" in manifest:
        if "uri" in raw or "pvc" in raw:
            raise SpecError(path, f"exactly one of {path}.uri, {path}.pvc and {path}.manifest.uri "
                                  "must be set")
        return StorageSpec(uri=manifest["uri"], secret_name=secret)
    if ("uri" in raw) == ("pvc" in raw):
        which = f"{path}.uri, {path}.pvc and {path}.manifest.uri" if path == "spec.input" \
            else f"{path}.uri and {path}.pvc"
        raise SpecError(path, f"exactly one of {which} must be set")
    if "uri" in raw:
        return StorageSpec(uri=raw["uri"], secret_name=secret)
    pvc = raw["pvc"]
    sub = pvc.get("path", "")
    if sub.startswith("/") or ".." in sub:
        raise SpecError(f"{path}.pvc.path", "must be a relative path without '..'")
    return StorageSpec(claim_name=pvc["claimName"], path=sub.strip("/"), secret_name=secret)


def _annotations(raw: Mapping[str, Any] | None) -> StorageSpec | None:
    if raw is None:
        return None
    return StorageSpec(uri=raw["uri"], secret_name=raw.get("secretRef", {}).get("name"))


def _workers(raw: Mapping[str, Any]) -> WorkersSpec:
    path = "spec.workers"
    replicas, low, high = raw.get("replicas"), raw.get("minReplicas"), raw.get("maxReplicas")
    if low is not None and high is not None and low > high:
        raise SpecError(f"{path}.minReplicas", f"must be <= {path}.maxReplicas ({low} > {high})")
    if replicas is not None and low is not None and low > replicas:
        raise SpecError(f"{path}.replicas", f"must be >= {path}.minReplicas ({replicas} < {low})")
    if replicas is not None and high is not None and replicas > high:
        raise SpecError(f"{path}.replicas", f"must be <= {path}.maxReplicas ({replicas} > {high})")
    if replicas is not None and replicas == 0 and not high:
        raise SpecError(path, "needs at least one worker (replicas or maxReplicas > 0)")
    replicas = replicas if replicas is not None else (low if low is not None else 1)
    low = low if low is not None else replicas
    high = high if high is not None else max(replicas, low)
    if high < 1:  # replicas defaulted from minReplicas: 0
        raise SpecError(path, "needs at least one worker (replicas or maxReplicas > 0)")
    quantity(raw["cpusPerWorker"], f"{path}.cpusPerWorker")
    quantity(raw["memory"], f"{path}.memory")
    for i, tol in enumerate(raw.get("tolerations", [])):
        if tol.get("operator") == "Exists" and tol.get("value"):
            raise SpecError(f"{path}.tolerations[{i}]",
                            "a toleration with operator Exists must not have a value")
    return WorkersSpec(
        replicas=replicas,
        min_replicas=low,
        max_replicas=high,
        gpus_per_worker=raw["gpusPerWorker"],
        cpus=str(raw["cpusPerWorker"]),
        memory=raw["memory"],
        gpu_resource=raw["gpuResource"],
        node_selector=dict(raw.get("nodeSelector", {})),
        tolerations=[dict(t) for t in raw.get("tolerations", [])],
    )


def _check_node_selector_keys(selector: Mapping[str, str]) -> None:
    for key in selector:
        prefix, _, name = key.rpartition("/")
        ok = (0 < len(name) <= 63 and re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", name)
              and (not prefix or (len(prefix) <= 253 and _DNS_SUBDOMAIN.match(prefix))))
        if not ok:
            raise SpecError(f"spec.workers.nodeSelector[{key!r}]", "is not a valid label key")


def parse_spec(raw_spec: Any) -> tuple[DetectionJobSpec, dict[str, Any]]:
    """The spec as dataclasses, and the defaulted spec as the API server would store it."""
    if raw_spec is None:
        raise SpecError("spec", "required field is missing")
    spec = validate(spec_schema(), raw_spec, "spec")
    _check_node_selector_keys(spec["workers"].get("nodeSelector", {}))
    raw_input, raw_output, raw_model = spec["input"], spec["output"], spec["model"]
    manifest = raw_input.get("manifest", {})
    if ("uri" in manifest) == ("path" in manifest) and manifest:
        raise SpecError("spec.input.manifest",
                        "exactly one of spec.input.manifest.uri and spec.input.manifest.path must be set")
    if "path" in manifest:
        if "pvc" not in raw_input:
            raise SpecError("spec.input",
                            "spec.input.manifest.path is a file on spec.input.pvc, which must be set")
        if manifest["path"].startswith("/") or ".." in manifest["path"]:
            raise SpecError("spec.input.manifest.path", "must be a relative path without '..'")
    problem = unknown_model(raw_model["name"])  # the job would refuse it after the Pods start
    if problem:
        raise SpecError("spec.model.name", problem)
    parsed = DetectionJobSpec(
        input=InputSpec(
            location=_storage(raw_input, "spec.input"),
            manifest=manifest.get("uri") or manifest.get("path"),
            manifest_column=manifest.get("column"),
        ),
        output=OutputSpec(
            location=_storage(raw_output, "spec.output"),
            mode=raw_output["mode"],
            retry_errors=raw_output["retryErrors"],
        ),
        workers=_workers(spec["workers"]),
        head=HeadSpec(cpus=str(spec["head"]["cpus"]), memory=spec["head"]["memory"]),
        image=spec["image"],
        ray_version=spec["rayVersion"],
        queue_name=spec.get("queueName"),
        suspend=spec["suspend"],
        active_deadline_seconds=spec.get("activeDeadlineSeconds"),
        backoff_limit=spec["backoffLimit"],
        ttl_seconds_after_finished=spec["ttlSecondsAfterFinished"],
        evaluation=_annotations(spec.get("evaluation", {}).get("annotations")),
    )
    quantity(spec["head"]["cpus"], "spec.head.cpus")
    quantity(spec["head"]["memory"], "spec.head.memory")
    return parsed, spec


def parse(obj: Any, default_namespace: str = "default") -> DetectionJob:
    """Validate a whole DetectionJob document (as from YAML or the API) into a DetectionJob."""
    if not isinstance(obj, Mapping):
        raise SpecError("<document>", "a DetectionJob must be a mapping (YAML object)")
    if obj.get("apiVersion") != API_VERSION:
        raise SpecError("apiVersion", f"must be {API_VERSION}, not {obj.get('apiVersion')!r}")
    if obj.get("kind") != KIND:
        raise SpecError("kind", f"must be {KIND}, not {obj.get('kind')!r}")
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        raise SpecError("metadata", "required field is missing")
    name = meta.get("name")
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise SpecError("metadata.name", f"must be a DNS subdomain name, not {name!r}")
    namespace = meta.get("namespace") or default_namespace
    if not isinstance(namespace, str) or len(namespace) > 63 or not _DNS_LABEL.match(namespace):
        raise SpecError("metadata.namespace", f"must be a DNS label, not {namespace!r}")
    spec, spec_values = parse_spec(obj.get("spec"))
    uid = meta.get("uid")
    generation = meta.get("generation")
    return DetectionJob(
        name=name,
        namespace=namespace,
        spec=spec,
        uid=uid if isinstance(uid, str) and uid else None,
        generation=generation if isinstance(generation, int) else None,
        spec_values=spec_values,
    )
