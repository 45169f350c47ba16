"""The kopf handlers: one small handler per event, the work is in controller.py.

Status is written by controller.py with optimistic concurrency (not through kopf's handler
results), because two sources feed it: DetectionJob changes and RayJob changes. No timers or
daemons and no deletion handlers, so kopf puts no finalizer on DetectionJobs: deleting one never
waits for the operator. Missed RayJob events are caught up when kopf re-lists on each watch
reconnect (``settings.watching.server_timeout``) and on operator start (resume).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from detectionjob_operator import controller, metrics, translate
from detectionjob_operator.translate import MANAGED_BY, MANAGED_BY_LABEL
from inference.detectionjob_api import GROUP, PLURAL, VERSION

DETECTIONJOBS = (GROUP, VERSION, PLURAL)
RAYJOBS = (translate.RAYJOB_GROUP, translate.RAYJOB_VERSION, translate.RAYJOB_PLURAL)
OWNED = {MANAGED_BY_LABEL: MANAGED_BY}
RETRY_BACKOFF = 5.0

log = logging.getLogger(__name__)


def post_event(obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """A Kubernetes Event on ``obj``, posted by kopf in the background."""
    kopf.event(dict(obj), type=type_, reason=reason, message=message[:1024])


def _options(memo: Any) -> translate.Options:
    return getattr(memo, "options", None) or translate.Options()


def _retrying(handler: str, fn: Any, *args: Any, **kwargs: Any) -> None:
    with metrics.counting_errors(handler):
        try:
            fn(*args, **kwargs)
        except controller.Retry as exc:
            raise kopf.TemporaryError(str(exc), delay=exc.delay) from exc


@kopf.on.resume(*DETECTIONJOBS, backoff=RETRY_BACKOFF)
@kopf.on.create(*DETECTIONJOBS, backoff=RETRY_BACKOFF)
def ensure_rayjob(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A DetectionJob appeared (or the operator started): make sure its RayJob exists."""
    _retrying("ensure_rayjob", controller.ensure, dict(body), _options(memo), post_event)


@kopf.on.update(*DETECTIONJOBS, field="spec.suspend", backoff=RETRY_BACKOFF)
def toggle_suspend(body: kopf.Body, new: Any, **_: Any) -> None:
    """``spec.suspend`` changed: suspend or resume the RayJob."""
    _retrying("toggle_suspend", controller.set_suspend, dict(body), bool(new), post_event)


@kopf.on.event(*RAYJOBS, labels=OWNED)
def follow_rayjob(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
    """A RayJob we own changed or was deleted: update its DetectionJob's status."""
    deleted = event.get("type") == "DELETED"
    try:
        _retrying("follow_rayjob", controller.follow, dict(body), post_event, deleted=deleted)
    except Exception:  # watching handlers are not retried by kopf: the next event catches up
        log.exception("following RayJob %s/%s failed", body.metadata.namespace, body.metadata.name,
                      extra={"k8s_ref": controller.ref(body)})


@kopf.on.event("", "v1", "pods", labels=OWNED)
def follow_pod(body: kopf.Body, **_: Any) -> None:
    """A Pod of a job changed: a Pending DetectionJob says why its Pods cannot start."""
    try:
        _retrying("follow_pod", controller.follow_pod, dict(body), post_event)
    except Exception:  # as follow_rayjob: the next event catches up
        log.exception("following Pod %s/%s failed", body.metadata.namespace, body.metadata.name,
                      extra={"k8s_ref": controller.ref(body)})


@kopf.on.event(*DETECTIONJOBS)
def follow_progress(body: kopf.Body, **_: Any) -> None:
    """The running job reported a stalled detector or its recovery: the Progressing condition."""
    try:
        _retrying("follow_progress", controller.follow_progress, dict(body), post_event)
    except Exception:  # as follow_rayjob: the next event catches up
        log.exception("following the progress of %s/%s failed", body.metadata.namespace,
                      body.metadata.name, extra={"k8s_ref": controller.ref(body)})


@kopf.on.event(*DETECTIONJOBS)
def count_phase(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
    """Keep the DetectionJobs-by-phase gauge current."""
    uid = body.metadata.uid
    if event.get("type") == "DELETED":
        metrics.set_phase(uid, None)
    else:
        metrics.set_phase(uid, (body.get("status") or {}).get("phase") or "Pending")


@kopf.on.probe(id="detectionjobs")
def probe_count(**_: Any) -> int:
    """Liveness details: how many DetectionJobs this replica tracks."""
    return metrics.tracked()
