"""DetectionJob status from its RayJob's status: pure functions, no API calls.

Phases: ``Pending`` (RayJob created, Ray cluster starting, job submitted but not running, queued
in Kueue, retrying), ``Running`` (the Ray job runs), ``Succeeded``, ``Failed`` (the job failed,
the deadline passed, the spec is invalid, the RayJob was deleted by someone else), ``Suspended``
(``spec.suspend: true``: no Ray cluster exists).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from inference.reasons import NOTHING_TO_DO, reason_of

PENDING, RUNNING, SUCCEEDED, FAILED, SUSPENDED = (
    "Pending", "Running", "Succeeded", "Failed", "Suspended")
PHASES = (PENDING, RUNNING, SUCCEEDED, FAILED, SUSPENDED)
TERMINAL = (SUCCEEDED, FAILED)

# Reasons for Failed that the operator decides alone; no RayJob event revives such a job.
INVALID_SPEC = "InvalidSpec"
RAYJOB_DELETED = "RayJobDeleted"
NAME_CONFLICT = "RayJobNameConflict"
FINAL_REASONS = (INVALID_SPEC, RAYJOB_DELETED, NAME_CONFLICT)

CREATED = "RayJobCreated"

# Why a Pod of the job cannot start, from the kubelet's container states and the scheduler's
# PodScheduled condition. The DetectionJob stays Pending with this reason and the kubelet's (or
# scheduler's) own message, instead of a silent "ClusterStarting" while nothing can ever run.
STUCK_CONTAINER_REASONS = (
    "ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
)
UNSCHEDULABLE = "Unschedulable"
QUEUED = "Queued"  # waiting for Kueue: no Pods exist yet
# While Running: True as images complete; False with reason Stalled while the job's stall
# watchdog has a stalled detector (``status.progress.stalled``, written by the job), until images
# complete again.
PROGRESSING, STALLED, DETECTING = "Progressing", "Stalled", "Detecting"
# True once the job evaluated its results against spec.evaluation (``status.evaluation``, written
# by the job); False with reason EvaluationFailed when it could not.
EVALUATED, EVALUATION_FAILED = "Evaluated", "EvaluationFailed"
CONDITION_TYPES = (CREATED, RUNNING, PROGRESSING, EVALUATED, SUSPENDED, SUCCEEDED, FAILED)


@dataclass(frozen=True)
class Observation:
    phase: str
    reason: str
    message: str


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# The line ``detectionjob run`` ends a failed run with (a user error or the failure policy).
_JOB_VERDICT = re.compile(r"^detectionjob run: (?:failed|error): .*$", re.MULTILINE)


def job_message(message: str | None) -> str | None:
    """KubeRay's message for a failed job holds the last 20,000 characters of its log; the job's
    own verdict line, when it wrote one, is what a user needs to read."""
    found = _JOB_VERDICT.findall(message or "")
    return found[-1] if found else message


def observe(rayjob: Mapping[str, Any], *, user_suspend: bool, queue: str | None) -> Observation:
    """The phase a RayJob (with KubeRay's status) puts its DetectionJob in."""
    status = rayjob.get("status") or {}
    deployment = status.get("jobDeploymentStatus") or ""
    job = status.get("jobStatus") or ""
    name = rayjob.get("metadata", {}).get("name", "")
    cluster = status.get("rayClusterName") or ""
    queued = bool(queue) and not user_suspend
    if deployment in ("Suspending", "Suspended") or (
            queued and deployment in ("", "New", "Initializing")
            and (rayjob.get("spec") or {}).get("suspend")):
        if queued:
            return Observation(PENDING, QUEUED, f"waiting for Kueue to admit the job (queue {queue})")
        return Observation(SUSPENDED, "Suspended", "suspended by spec.suspend; no Ray cluster runs")
    if deployment == "Complete":
        if job == "SUCCEEDED":
            return Observation(SUCCEEDED, "JobSucceeded", "the Ray job succeeded")
        ended = f"the Ray job ended {job or 'without status'}"
        message = job_message(status.get("message")) or ended
        return Observation(FAILED, reason_of(message) or f"Job{job.title() or 'Failed'}", message)
    if deployment in ("Failed", "ValidationFailed"):
        message = (job_message(status.get("message"))
                   or f"RayJob {name} failed (Ray job {job or 'not started'})")
        # The job's own reason (NoImages, OutputNotWritable, ...) is more precise than KubeRay's.
        reason = reason_of(message) or status.get("reason") or (
            "ValidationFailed" if deployment == "ValidationFailed" else "RayJobFailed")
        return Observation(FAILED, reason, message)
    if deployment == "Running":
        if job == "RUNNING":
            return Observation(RUNNING, "JobRunning", f"the Ray job runs on Ray cluster {cluster}")
        if job in ("SUCCEEDED", "FAILED", "STOPPED"):
            return Observation(RUNNING, "JobFinishing", f"the Ray job ended {job}; KubeRay finishes")
        return Observation(PENDING, "JobPending", f"the Ray job is submitted to Ray cluster {cluster}")
    if deployment == "Retrying":
        return Observation(PENDING, "Retrying", status.get("message") or "KubeRay retries the job")
    if deployment == "Initializing":
        where = f"Ray cluster {cluster}" if cluster else "the Ray cluster"
        return Observation(PENDING, "ClusterStarting", f"{where} is starting")
    return Observation(PENDING, CREATED, f"RayJob {name} is created; waiting for KubeRay")


def told_by_the_job(obs: Observation, status: Mapping[str, Any] | None) -> Observation:
    """A success the job itself qualified: it found no image and was allowed to
    (``spec.input.allowEmpty``): reason NothingToDo, its line (naming the URI) as the message."""
    note = ((status or {}).get("progress") or {}).get("nothingToDo")
    if obs.phase == SUCCEEDED and note:
        return Observation(SUCCEEDED, NOTHING_TO_DO, str(note))
    return obs


def pod_problem(pods: list[Mapping[str, Any]]) -> Observation | None:
    """Why a Pod of the job cannot start (image, Secret, scheduling), or None.

    A container that cannot start (wrong image, missing Secret) wins over a Pod that cannot be
    scheduled yet: the first never heals by waiting, the second may (nodes added, jobs ending).
    Pods are taken in name order so the same Pods give the same answer.
    """
    pods = sorted((p for p in pods if not p.get("metadata", {}).get("deletionTimestamp")),
                  key=lambda p: p.get("metadata", {}).get("name", ""))
    for pod in pods:
        name, status = pod.get("metadata", {}).get("name", ""), pod.get("status") or {}
        for cstatus in (status.get("initContainerStatuses") or []) + \
                (status.get("containerStatuses") or []):
            waiting = (cstatus.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STUCK_CONTAINER_REASONS:
                detail = waiting.get("message") or waiting["reason"]
                return Observation(PENDING, waiting["reason"],
                                   f"pod {name}, container {cstatus.get('name')}: {detail}")
    for pod in pods:
        name, status = pod.get("metadata", {}).get("name", ""), pod.get("status") or {}
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and \
                    cond.get("reason") == UNSCHEDULABLE:
                return Observation(PENDING, UNSCHEDULABLE,
                                   f"pod {name} cannot be scheduled: {cond.get('message') or ''}".strip())
    return None


def stalled(status: Mapping[str, Any] | None) -> str | None:
    """The job's own word that a detector is stalled (``status.progress.stalled``), or None."""
    return ((status or {}).get("progress") or {}).get("stalled") or None


def evaluated(evaluation: Mapping[str, Any] | None) -> tuple[str, str, str]:
    """The Evaluated condition's (status, reason, message) from ``status.evaluation``."""
    evaluation = evaluation or {}
    if evaluation.get("map") is not None:
        message = (f"mAP {evaluation['map']:.3f}, AP50 {evaluation.get('map50', -1):.3f} against "
                   f"{evaluation.get('annotations', '')} ({evaluation.get('report', '')})")
        return "True", EVALUATED, message
    if evaluation.get("error"):
        return "False", EVALUATION_FAILED, str(evaluation["error"])
    return "False", "NotEvaluated", ""


def conditions(previous: list[Mapping[str, Any]] | None, obs: Observation, *, created: bool,
               generation: int | None, timestamp: str, stall: str | None = None,
               evaluation: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The conditions for ``obs`` (``stall``: the job's stalled-batch message, if any;
    ``evaluation``: ``status.evaluation``); lastTransitionTime moves only when a status flips."""
    old = {c.get("type"): c for c in previous or () if isinstance(c, Mapping)}
    result = []
    for ctype in CONDITION_TYPES:
        if ctype == CREATED:
            value = "True" if created else "False"
            reason = CREATED if created else (obs.reason if obs.phase == FAILED else "NotCreated")
            message = "" if created else obs.message
        elif ctype == PROGRESSING:
            running = obs.phase == RUNNING
            value = "True" if running and not stall else "False"
            reason, message = ((STALLED, stall) if running and stall else
                               (DETECTING, "") if running else (obs.phase, ""))
        elif ctype == EVALUATED:
            value, reason, message = evaluated(evaluation)
        else:
            value = "True" if obs.phase == ctype else "False"
            reason, message = (obs.reason, obs.message) if value == "True" else (obs.phase, "")
        before = old.get(ctype, {})
        changed = before.get("status") != value
        cond = {"type": ctype, "status": value, "reason": reason, "message": message,
                "lastTransitionTime": timestamp if changed else before.get("lastTransitionTime",
                                                                              timestamp)}
        if generation is not None:
            cond["observedGeneration"] = generation
        result.append(cond)
    return result


def rayjob_fields(rayjob: Mapping[str, Any], phase: str,
                  current: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The status fields copied from the RayJob (completionTime is kept once set)."""
    status = rayjob.get("status") or {}
    fields: dict[str, Any] = {"rayJobName": rayjob.get("metadata", {}).get("name")}
    for ours, theirs in (("rayClusterName", "rayClusterName"), ("dashboardURL", "dashboardURL"),
                         ("jobId", "jobId"), ("jobStatus", "jobStatus"),
                         ("jobDeploymentStatus", "jobDeploymentStatus"),
                         ("startTime", "startTime")):
        fields[ours] = status.get(theirs) or None
    done = (current or {}).get("completionTime") or status.get("endTime") or now()
    fields["completionTime"] = done if phase in TERMINAL else None
    return fields


def is_final(status: Mapping[str, Any] | None) -> bool:
    """Whether the operator itself ended this DetectionJob (RayJob events no longer count)."""
    status = status or {}
    return status.get("phase") == FAILED and status.get("reason") in FINAL_REASONS


def patch_for(current: Mapping[str, Any] | None, obs: Observation, *, created: bool,
              generation: int | None, extra: Mapping[str, Any] | None = None,
              timestamp: str | None = None) -> dict[str, Any]:
    """A merge patch of ``status`` that moves the DetectionJob to ``obs``.

    Fields owned by the running job (``progress``) are never touched.
    """
    current = current or {}
    timestamp = timestamp or now()
    patch: dict[str, Any] = {
        "phase": obs.phase,
        "reason": obs.reason,
        "message": obs.message,
        "conditions": conditions(current.get("conditions"), obs, created=created,
                                 generation=generation, timestamp=timestamp,
                                 stall=stalled(current), evaluation=current.get("evaluation")),
    }
    if generation is not None:
        patch["observedGeneration"] = generation
    patch.update(extra or {})
    return patch


def changed(current: Mapping[str, Any] | None, patch: Mapping[str, Any]) -> bool:
    """Whether applying ``patch`` would change anything but timestamps."""
    current = current or {}
    for key, value in patch.items():
        if key == "conditions":
            strip = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                     for c in value]
            before = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                      for c in current.get("conditions") or ()]
            if strip != before:
                return True
        elif key == "completionTime":
            if (value is None) != (current.get(key) is None):
                return True
        elif current.get(key) != value:
            return True
    return False
