"""Helpers for the operator's tests (imported as `djtest`; conftest.py puts this folder on sys.path)."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.binaries import binary

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "detectionjob.yaml"

MINIMAL: dict[str, Any] = {
    "apiVersion": "detectionjob.dev/v1alpha1",
    "kind": "DetectionJob",
    "metadata": {"name": "dj", "namespace": "team-a"},
    "spec": {
        "input": {"uri": "s3://in/images/"},
        "output": {"uri": "s3://out/results/"},
        "image": "registry.example/detectionjob-worker:1",
    },
}


def make_dj(spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    """MINIMAL with ``spec`` merged in (one level deep per top-level key) and metadata overrides."""
    doc = copy.deepcopy(MINIMAL)
    for key, value in (spec or {}).items():
        if isinstance(value, dict) and isinstance(doc["spec"].get(key), dict):
            doc["spec"][key].update(value)
        else:
            doc["spec"][key] = value
    doc["metadata"].update(meta)
    return doc


@functools.cache
def _kuberay_rayjob_schema() -> dict[str, Any]:
    # The CRDs of the KubeRay the tests run, copied from its Go module by hack/build-binaries.sh
    # (fails, never skips, when it has not run).
    path = binary("kuberay-crds") / "ray.io_rayjobs.yaml"
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(path.read_text(), Loader=loader)  # noqa: S506 - a safe loader
    return next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]


@pytest.fixture
def kuberay_rayjob_schema() -> dict[str, Any]:
    """KubeRay's RayJob openAPIV3Schema (ray.io/v1), of the version the tests run."""
    return _kuberay_rayjob_schema()


def assert_accepted_by_kuberay(rayjob: dict[str, Any], schema: dict[str, Any]) -> None:
    """Every field of ``rayjob`` is in KubeRay's schema (nothing would be pruned) and typed right."""
    from detectionjob_operator.crd_schema import validate

    body = {k: v for k, v in rayjob.items() if k != "metadata"}  # ObjectMeta is not in the schema
    validate(schema, body, "rayjob")
    allowed_meta = {"name", "namespace", "labels", "annotations", "ownerReferences"}
    assert set(rayjob["metadata"]) <= allowed_meta
