"""Prometheus metrics of the operator (``--metrics-port``)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import start_http_server as _start_http_server

from detectionjob_operator.status import PHASES

RECONCILE_ERRORS = Counter(
    "detectionjob_reconcile_errors_total",
    "Handler runs that raised (kopf retries them).", ["handler"])
RAYJOBS_CREATED = Counter(
    "detectionjob_rayjobs_created_total", "RayJobs this operator created.")
CREATE_LATENCY = Histogram(
    "detectionjob_rayjob_create_latency_seconds",
    "From the DetectionJob's creationTimestamp (1 s resolution) to its RayJob created.",
    buckets=(0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300))
JOBS = Gauge("detectionjob_jobs", "DetectionJobs by phase, as this replica sees them.", ["phase"])

_phases: dict[str, str] = {}
_lock = threading.Lock()


def set_phase(uid: str, phase: str | None) -> None:
    """Record a DetectionJob's phase (None: deleted) and refresh the per-phase gauge."""
    with _lock:
        if phase is None:
            _phases.pop(uid, None)
        else:
            _phases[uid] = phase or "Unknown"
        counts = {p: 0 for p in (*PHASES, "Unknown")}
        for value in _phases.values():
            counts[value if value in counts else "Unknown"] += 1
        for p, n in counts.items():
            JOBS.labels(phase=p).set(n)


def tracked() -> int:
    """How many DetectionJobs this replica has seen (and not seen deleted)."""
    with _lock:
        return len(_phases)


@contextlib.contextmanager
def counting_errors(handler: str) -> Iterator[None]:
    """Count exceptions escaping a handler, then re-raise them."""
    try:
        yield
    except Exception:
        RECONCILE_ERRORS.labels(handler=handler).inc()
        raise


def serve(port: int, registry: CollectorRegistry = REGISTRY) -> None:
    """Serve /metrics on ``port`` (0: not at all) in a daemon thread."""
    if port:
        _start_http_server(port, registry=registry)
