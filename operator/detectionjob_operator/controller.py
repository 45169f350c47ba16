"""What the operator does, as plain functions over API objects (handlers.py wires them to kopf).

* :func:`ensure` - a DetectionJob is created or seen at start: make (or find) its RayJob.
* :func:`follow` - a RayJob it owns changed or vanished: bring the DetectionJob's status along.
* :func:`set_suspend` - ``spec.suspend`` changed: pass it on to the RayJob.
* :func:`follow_pod` - a Pod of a job changed: say why it cannot start (image, Secret, scheduling).
* :func:`follow_progress` - the running job reported a stalled detector, or images completing again:
  the ``Progressing`` condition follows, with an Event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from detectionjob_operator import kube, metrics, translate
from detectionjob_operator import status as st
from detectionjob_operator.crd_schema import SpecError
from detectionjob_operator.spec import DetectionJob, parse
from inference.detectionjob_api import API_VERSION, KIND

log = logging.getLogger(__name__)

# Posts a Kubernetes Event on a DetectionJob: (object, type, reason, message).
EventFn = Callable[[Mapping[str, Any], str, str, str], None]


class Retry(Exception):
    """A transient state; the handler should run again after ``delay`` seconds."""

    def __init__(self, message: str, delay: float = 5.0) -> None:
        super().__init__(message)
        self.delay = delay


def controller_owner(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The controlling DetectionJob owner reference of a child, if any."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or ():
        if ref.get("controller") and ref.get("kind") == KIND and \
                ref.get("apiVersion", "").split("/")[0] == API_VERSION.split("/")[0]:
            return dict(ref)
    return None


def ref(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object reference kopf's JSON log format puts under "object" (``k8s_ref``)."""
    meta = obj.get("metadata", {})
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
            "namespace": meta.get("namespace"), "name": meta.get("name"), "uid": meta.get("uid")}


def _transition(dj: Mapping[str, Any], before: Mapping[str, Any] | None,
                patch: Mapping[str, Any], event: EventFn) -> None:
    before = before or {}
    if (before.get("phase"), before.get("reason")) == (patch.get("phase"), patch.get("reason")):
        return
    kind = "Warning" if patch.get("phase") == st.FAILED else "Normal"
    event(dj, kind, patch["reason"], patch["message"])
    log.info("%s/%s: %s -> %s (%s) %s", dj["metadata"]["namespace"], dj["metadata"]["name"],
             before.get("phase") or "-", patch["phase"], patch["reason"], patch["message"],
             extra={"k8s_ref": ref(dj), "phase": patch["phase"], "reason": patch["reason"],
                    "previous_phase": before.get("phase")})


def _write(dj: Mapping[str, Any], obs: st.Observation, event: EventFn, *, created: bool,
           extra: Mapping[str, Any] | None = None, generation: int | None = None) -> None:
    """Move the DetectionJob to ``obs`` (optimistic concurrency, Event on transitions)."""
    meta = dj["metadata"]
    uid = meta["uid"]
    applied: dict[str, Any] = {}

    def compute(current: dict[str, Any]) -> dict[str, Any] | None:
        if current["metadata"].get("uid") != uid:
            return None
        status = current.get("status") or {}
        if st.is_final(status):
            return None
        gen = generation if generation is not None else status.get("observedGeneration")
        extras = dict(extra or {})
        if "completionTime" in extras and extras["completionTime"] is not None:
            extras["completionTime"] = status.get("completionTime") or extras["completionTime"]
        patch = st.patch_for(status, obs, created=created, generation=gen, extra=extras)
        if not st.changed(status, patch):
            return None
        applied.clear()
        applied.update(patch)
        return patch

    before = kube.update_status(meta["namespace"], meta["name"], compute, current=dj)
    if before is not None:
        _transition(before, before.get("status"), applied, event)
        _condition_events(before, (before.get("status") or {}).get("conditions"), applied["conditions"],
                          event)
        metrics.set_phase(uid, applied["phase"])


def _condition_events(dj: Mapping[str, Any], before: list[Mapping[str, Any]] | None,
                      after: list[Mapping[str, Any]], event: EventFn) -> None:
    """Events for the turns of the conditions the running job drives: a stalled detector (Stalled),
    images completing again (Recovered), the evaluation (Evaluated, EvaluationFailed)."""
    old = {c.get("type"): c for c in before or ()}
    for cond in after:
        was = old.get(cond["type"], {})
        if (was.get("status"), was.get("reason")) == (cond["status"], cond["reason"]):
            continue
        if cond["type"] == st.PROGRESSING and cond["reason"] == st.STALLED:
            event(dj, "Warning", st.STALLED, cond["message"])
        elif cond["type"] == st.PROGRESSING and was.get("reason") == st.STALLED:
            event(dj, "Normal", "Recovered", "images complete again after a stall")
        elif cond["type"] == st.EVALUATED and cond["reason"] in (st.EVALUATED, st.EVALUATION_FAILED):
            event(dj, "Normal" if cond["status"] == "True" else "Warning", cond["reason"], cond["message"])


def fail(dj: Mapping[str, Any], reason: str, message: str, event: EventFn) -> None:
    """End a DetectionJob as Failed for good (reasons in status.FINAL_REASONS)."""
    _write(dj, st.Observation(st.FAILED, reason, message), event,
           created=bool((dj.get("status") or {}).get("rayJobName")),
           generation=dj["metadata"].get("generation"))


def _latency(dj: Mapping[str, Any]) -> float | None:
    stamp = dj["metadata"].get("creationTimestamp")
    if not stamp:
        return None
    created = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    return max(0.0, time.time() - created.timestamp())


def ensure(dj: Mapping[str, Any], options: translate.Options, event: EventFn) -> None:
    """Make sure a DetectionJob has its RayJob (idempotent: restarts, retries, AlreadyExists)."""
    meta = dj["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    status = dj.get("status") or {}
    if status.get("phase") in st.TERMINAL:
        return
    try:
        job = parse(dj)
    except SpecError as exc:
        fail(dj, st.INVALID_SPEC, f"invalid spec: {exc}", event)
        return
    rayjob_name = translate.rayjob_name(name)

    if status.get("rayJobName"):  # created before (this process or an earlier one)
        rayjob = kube.get_rayjob(namespace, rayjob_name)
        if rayjob is None:
            rayjob_deleted(dj, rayjob_name, event)
        else:
            follow(rayjob, event, dj=dj)
        return

    rayjob, created = _create(dj, job, options, event)
    if rayjob is None:
        return
    obs = st.observe(rayjob, user_suspend=job.spec.suspend, queue=job.spec.queue_name)
    if not created:  # a RayJob just created has no Pods yet: no LIST per new DetectionJob
        obs = _with_pods(obs, namespace, name)
    fields = st.rayjob_fields(rayjob, obs.phase)
    fields["gpus"] = translate.gpus(job)
    _write(dj, obs, event, created=True, extra=fields, generation=meta.get("generation"))


def _create(dj: Mapping[str, Any], job: DetectionJob, options: translate.Options,
            event: EventFn) -> tuple[dict[str, Any] | None, bool]:
    """Create the RayJob (and the progress reporter's RBAC); (the RayJob, whether this call made
    it), or (None, False) when one of that name belongs to something else (Failed/NameConflict)."""
    meta = dj["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    rayjob_name = translate.rayjob_name(name)
    if options.progress:
        kube.create_reporter(translate.reporter_objects(name, namespace, meta["uid"]))
    rayjob, created = kube.create_rayjob(translate.to_rayjob(job, options))
    owner = controller_owner(rayjob)
    if owner is None or owner.get("uid") != meta["uid"]:
        if owner and owner.get("name") == name:
            raise Retry(f"RayJob {rayjob_name} of an earlier DetectionJob {name} is still "
                        "being deleted")
        fail(dj, st.NAME_CONFLICT,
             f"RayJob {rayjob_name} exists and is not owned by this DetectionJob; "
             "delete it or rename the DetectionJob", event)
        return None, False
    if created:
        metrics.RAYJOBS_CREATED.inc()
        latency = _latency(dj)
        if latency is not None:
            metrics.CREATE_LATENCY.observe(latency)
        event(dj, "Normal", st.CREATED, f"created RayJob {rayjob_name}")
        log.info("%s/%s: created RayJob %s", namespace, name, rayjob_name,
                 extra={"k8s_ref": ref(dj), "rayjob": rayjob_name})
    return rayjob, created


def rayjob_deleted(dj: Mapping[str, Any], rayjob_name: str, event: EventFn) -> None:
    """The RayJob of an unfinished DetectionJob is gone: Failed (RayJobDeleted), not recreated."""
    if (dj.get("status") or {}).get("phase") in st.TERMINAL:
        return
    fail(dj, st.RAYJOB_DELETED,
         f"RayJob {rayjob_name} was deleted by someone else; the job is not restarted. Delete "
         "and re-apply the DetectionJob to run it again (spec.output.mode: resume skips "
         "finished shards)", event)


def follow(rayjob: Mapping[str, Any], event: EventFn, *, deleted: bool = False,
           dj: Mapping[str, Any] | None = None) -> None:
    """Bring the owning DetectionJob's status in line with its RayJob."""
    owner = controller_owner(rayjob)
    if owner is None:
        return
    namespace = rayjob["metadata"]["namespace"]
    if dj is None:
        dj = kube.get_detectionjob(namespace, owner["name"])
    if dj is None or dj["metadata"].get("uid") != owner.get("uid"):
        return
    if dj["metadata"].get("deletionTimestamp"):
        return
    status = dj.get("status") or {}
    if st.is_final(status):
        return
    if deleted:
        rayjob_deleted(dj, rayjob["metadata"]["name"], event)
        return
    spec = dj.get("spec") or {}
    obs = _with_pods(st.observe(rayjob, user_suspend=bool(spec.get("suspend")),
                                queue=spec.get("queueName")), namespace, owner["name"])
    obs = st.told_by_the_job(obs, status)
    fields = st.rayjob_fields(rayjob, obs.phase, status)
    _write(dj, obs, event, created=True, extra=fields)


def _with_pods(obs: st.Observation, namespace: str, name: str) -> st.Observation:
    """A Pending observation, told more precisely by the job's Pods when one cannot start."""
    if obs.phase != st.PENDING or obs.reason == st.QUEUED:
        return obs
    selector = f"{translate.NAME_LABEL}={translate.name_label(name)}"
    return st.pod_problem(kube.list_pods(namespace, selector)) or obs


def follow_pod(pod: Mapping[str, Any], event: EventFn) -> None:
    """A Pod of a job changed: its DetectionJob's status may say why the job cannot start."""
    meta = pod.get("metadata") or {}
    name = (meta.get("annotations") or {}).get(translate.OWNER_ANNOTATION)
    if not name:
        return
    dj = kube.get_detectionjob(meta["namespace"], name)
    status = (dj or {}).get("status") or {}
    if dj is None or status.get("phase") != st.PENDING or not status.get("rayJobName"):
        return
    rayjob = kube.get_rayjob(meta["namespace"], status["rayJobName"])
    if rayjob is not None:
        follow(rayjob, event, dj=dj)


def set_suspend(dj: Mapping[str, Any], suspend: bool, event: EventFn) -> None:
    """Pass ``spec.suspend`` on to the RayJob (with a Kueue queue, resuming is Kueue's call)."""
    meta = dj["metadata"]
    status = dj.get("status") or {}
    if status.get("phase") in st.TERMINAL or not status.get("rayJobName"):
        return
    if not suspend and (dj.get("spec") or {}).get("queueName"):
        event(dj, "Normal", "Resuming", "spec.suspend is false; Kueue decides when the job runs")
        return
    rayjob = kube.patch_rayjob(meta["namespace"], status["rayJobName"],
                               {"spec": {"suspend": suspend}})
    if rayjob is None:
        rayjob_deleted(dj, status["rayJobName"], event)
        return
    event(dj, "Normal", "Suspending" if suspend else "Resuming",
          f"set spec.suspend={str(suspend).lower()} on RayJob {status['rayJobName']}")
    spec = dj.get("spec") or {}
    obs = st.observe(rayjob, user_suspend=suspend, queue=spec.get("queueName"))
    _write(dj, obs, event, created=True, extra=st.rayjob_fields(rayjob, obs.phase, status),
           generation=meta.get("generation"))


def follow_progress(dj: Mapping[str, Any], event: EventFn) -> None:
    """The running job wrote ``status.progress.stalled`` (a stalled detector; removed once images
    complete again) or ``status.evaluation``: the conditions Progressing and Evaluated follow, and
    :func:`_write` posts an Event on each turn. Nothing is written when they already say it."""
    status = dj.get("status") or {}
    if not status.get("phase") or not status.get("rayJobName") or st.is_final(status):
        return
    obs = st.Observation(status["phase"], status.get("reason") or "", status.get("message") or "")
    _write(dj, obs, event, created=True)
