"""The few Kubernetes API calls the operator makes (the official ``kubernetes`` client)."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from detectionjob_operator.translate import RAYJOB_GROUP, RAYJOB_PLURAL, RAYJOB_VERSION
from inference.detectionjob_api import GROUP, MERGE_PATCH, PLURAL, VERSION, new_api_client

log = logging.getLogger(__name__)



@functools.cache
def api_client() -> client.ApiClient:
    """The operator's one API client (its handlers run on many threads: a larger pool)."""
    return new_api_client(pool_size=32)


def _custom() -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client())


def _missing(exc: ApiException) -> bool:
    return exc.status == 404


def get_detectionjob(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return _custom().get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if _missing(exc):
            return None
        raise


def update_status(namespace: str, name: str,
                  compute: Callable[[dict[str, Any]], dict[str, Any] | None],
                  attempts: int = 8, current: Mapping[str, Any] | None = None,
                  ) -> dict[str, Any] | None:
    """Read-modify-write of a DetectionJob's status with optimistic concurrency.

    ``compute(detectionjob)`` returns the status merge patch, or None for no change. Returns the
    DetectionJob as read before the patch that was applied (None: gone or nothing to do).
    ``current``, a recent read, saves the first GET (a stale one costs a 409 and a re-read).
    """
    for attempt in range(attempts):
        if attempt == 0 and current is not None and current["metadata"].get("resourceVersion"):
            dj: dict[str, Any] | None = dict(current)
        else:
            dj = get_detectionjob(namespace, name)
        if dj is None:
            return None
        patch = compute(dj)
        if patch is None:
            return None
        body = {"metadata": {"resourceVersion": dj["metadata"]["resourceVersion"]},
                "status": patch}
        try:
            _custom().patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, body, _content_type=MERGE_PATCH)
            return dj
        except ApiException as exc:
            if exc.status == 409:
                continue  # someone wrote in between: read again
            if _missing(exc):
                return None
            raise
    raise RuntimeError(f"status of {namespace}/{name}: too many conflicting writers")


def get_rayjob(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return _custom().get_namespaced_custom_object(
            RAYJOB_GROUP, RAYJOB_VERSION, namespace, RAYJOB_PLURAL, name)
    except ApiException as exc:
        if _missing(exc):
            return None
        raise


def create_rayjob(body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Create the RayJob; on AlreadyExists return the existing one. ``(rayjob, created)``."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    try:
        created = _custom().create_namespaced_custom_object(
            RAYJOB_GROUP, RAYJOB_VERSION, namespace, RAYJOB_PLURAL, body, field_validation="Strict")
        return created, True
    except ApiException as exc:
        if exc.status != 409:
            raise
    existing = get_rayjob(namespace, name)
    if existing is None:  # deleted in between: let the caller retry
        raise RuntimeError(f"RayJob {namespace}/{name} exists and vanished; retrying")
    return existing, False


def patch_rayjob(namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
    """Merge-patch a RayJob; None when it does not exist."""
    try:
        return _custom().patch_namespaced_custom_object(
            RAYJOB_GROUP, RAYJOB_VERSION, namespace, RAYJOB_PLURAL, name, patch, _content_type=MERGE_PATCH)
    except ApiException as exc:
        if _missing(exc):
            return None
        raise


def list_pods(namespace: str, selector: str) -> list[dict[str, Any]]:
    """The Pods matching a label selector, as plain dicts (API field names)."""
    core = client.CoreV1Api(api_client())
    pods = core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
    return list(json.loads(pods.data).get("items") or [])


def _create_ignoring_conflict(create: Callable[..., Any], namespace: str, body: dict) -> None:
    try:
        create(namespace, body)
    except ApiException as exc:
        if exc.status != 409:
            raise


def create_reporter(objects: list[dict[str, Any]]) -> None:
    """Create the reporter's objects; existing ones are left as they are."""
    core = client.CoreV1Api(api_client())
    rbac = client.RbacAuthorizationV1Api(api_client())
    creators = {"ServiceAccount": core.create_namespaced_service_account,
                "Role": rbac.create_namespaced_role,
                "RoleBinding": rbac.create_namespaced_role_binding}
    for obj in objects:
        _create_ignoring_conflict(creators[obj["kind"]], obj["metadata"]["namespace"], obj)
