"""Progress from the running job into its DetectionJob's status (``status.progress``).

Used by ``detectionjob run`` when ``DETECTIONJOB_STATUS_TARGET=namespace/name`` is set: it calls
``reporter(done, total, failed, stalled)`` every few seconds and ``reporter.close()`` at the end. Each call
sends at most one JSON merge patch of ``status.progress`` through the status subresource (in the
Pod: the ServiceAccount the operator made, which may patch only this DetectionJob's status).
Updates are throttled to one per ``interval`` seconds; ``close()`` sends the last one. Nothing here
ever raises into the job: errors are logged (once per kind) and the next update tries again.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any

from inference.detectionjob_api import GROUP, MERGE_PATCH, PLURAL, VERSION, new_api_client
from inference.reasons import NOTHING_TO_DO

log = logging.getLogger(__name__)


def summary(done: int, total: int) -> str:
    """``done/total (pct%)`` for the PROGRESS column."""
    if total <= 0:
        return f"{done}/?"
    return f"{done}/{total} ({min(100, int(100 * done / total))}%)"


def progress_patch(done: int, total: int, failed: int, stalled: str | None = None) -> dict[str, Any]:
    """The merge patch of ``status.progress``; ``stalled`` (the stall watchdog's line while a
    detector is stalled) is removed again by None."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"status": {"progress": {"done": int(done), "total": int(total),
                                    "failed": int(failed), "summary": summary(done, total),
                                    "stalled": stalled[:1024] if stalled else None,
                                    "updateTime": stamp}}}


def finish_patch(summary: dict[str, Any]) -> dict[str, Any]:
    """``status`` fields from a finished run's summary: device use, evaluation."""
    def pick(source: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
        return {ours: source[theirs] for ours, theirs in fields.items() if source.get(theirs) is not None}

    patch: dict[str, Any] = {}
    use = pick(summary, {"busyFraction": "busy_fraction", "imagesPerDeviceHour": "images_per_device_hour",
                         "deviceSeconds": "device_seconds", "estimatedCost": "estimated_cost"})
    if summary.get("reason") == NOTHING_TO_DO:  # the DetectionJob's reason on success
        use["nothingToDo"] = summary.get("message") or NOTHING_TO_DO
    if use:
        patch["progress"] = use
    evaluation = pick(summary.get("evaluation") or {}, {"map": "map", "map50": "map_50",
                                                        "annotations": "annotations", "report": "report",
                                                        "error": "error"})
    if evaluation:
        patch["evaluation"] = evaluation
    return patch


class StatusReporter:
    """``reporter(done, total, failed, stalled=None)``: throttled, best-effort status.progress
    updates; a change of ``stalled`` is sent at once."""

    def __init__(self, target: str, interval: float = 5.0, api: Any = None,
                 timeout: float = 10.0) -> None:
        namespace, sep, name = target.partition("/")
        if not sep or not namespace or not name:
            raise ValueError(f"DETECTIONJOB_STATUS_TARGET must be namespace/name, not {target!r}")
        self.namespace, self.name = namespace, name
        self.interval = interval
        self.timeout = timeout
        self._api = api
        self._lock = threading.Lock()
        self._last_sent = 0.0
        self._pending: tuple[int, int, int, str | None] | None = None
        self._sent: tuple[int, int, int, str | None] | None = None
        self._errors: set[str] = set()

    def _client(self) -> Any:
        if self._api is None:
            from kubernetes import client

            self._api = client.CustomObjectsApi(new_api_client())
        return self._api

    def __call__(self, done: int, total: int, failed: int = 0, stalled: str | None = None) -> None:
        try:
            with self._lock:
                self._pending = (int(done), int(total), int(failed), stalled or None)
                turned = self._sent is None or self._sent[3] != self._pending[3]
                if not turned and time.monotonic() - self._last_sent < self.interval:
                    return
                self._flush()
        except Exception as exc:  # noqa: BLE001 - progress must never break the job
            self._log(exc)

    def finish(self, summary: dict[str, Any]) -> None:
        """The run's device use (``inference.efficiency``) into ``status.progress`` and its
        evaluation (``--evaluate-annotations``) into ``status.evaluation``, once."""
        patch = finish_patch(summary)
        if not patch:
            return
        try:
            self._client().patch_namespaced_custom_object_status(
                GROUP, VERSION, self.namespace, PLURAL, self.name, {"status": patch},
                _content_type=MERGE_PATCH, _request_timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001
            self._log(exc)

    def close(self) -> None:
        """Send the last numbers (if not sent yet)."""
        try:
            with self._lock:
                self._flush()
        except Exception as exc:  # noqa: BLE001
            self._log(exc)

    def _flush(self) -> None:
        if self._pending is None or self._pending == self._sent:
            return
        values = self._pending
        self._last_sent = time.monotonic()
        self._client().patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, self.name, progress_patch(*values),
            _content_type=MERGE_PATCH, _request_timeout=self.timeout)
        self._sent = values

    def _log(self, exc: Exception) -> None:
        kind = type(exc).__name__ + str(getattr(exc, "status", ""))
        if kind not in self._errors:
            self._errors.add(kind)
            log.warning("progress for %s/%s not reported: %s", self.namespace, self.name,
                        str(exc).splitlines()[0] if str(exc) else kind)
        else:
            log.debug("progress for %s/%s not reported: %s", self.namespace, self.name, exc)
