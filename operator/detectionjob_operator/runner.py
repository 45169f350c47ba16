"""Start the kopf operator: settings, logging, metrics, peering, namespaces."""

from __future__ import annotations

import getpass
import logging
import os
import random
import socket
from dataclasses import dataclass
from typing import Any

import kopf

from detectionjob_operator import metrics, translate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()  # empty: the whole cluster
    liveness: str | None = "http://0.0.0.0:8080/healthz"
    metrics_port: int = 9090
    peering: str | None = None  # None: standalone
    priority: int | None = None  # None: random with peering (replicas must not tie)
    log_format: str = "text"  # json | text
    verbose: bool = False
    progress: bool = True


def configure_logging(log_format: str, verbose: bool) -> None:
    """kopf's JSON or text logging on the root logger, replacing earlier handlers."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    fmt = kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(verbose=verbose, log_format=fmt, log_refkey="object")
    for noisy in ("kubernetes.client.rest", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.WARNING)


def make_startup(config: OperatorConfig) -> Any:
    """The kopf startup handler for ``config``."""

    def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        # kopf's own bookkeeping goes to annotations: the status schema has no room for it.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix="detectionjob.dev")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="detectionjob.dev", key="last-handled-configuration")
        settings.posting.level = logging.WARNING  # Events only from us and for errors
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.execution.max_workers = 16
        # Explicit namespaces (no globs): no cluster-wide scanning of CRDs and namespaces, so a
        # namespaced Role suffices (the CRDs must exist when the operator starts).
        settings.scanning.disabled = bool(config.namespaces) and not any(
            any(ch in ns for ch in "*?[!") for ns in config.namespaces)
        memo.options = translate.Options(progress=config.progress)
        metrics.serve(config.metrics_port)
        log.info("detectionjob operator started: namespaces=%s peering=%s priority=%s metrics=%s",
                 list(config.namespaces) or "all", config.peering or "standalone",
                 settings.peering.priority, config.metrics_port or "off")

    return startup


def own_identity() -> str | None:
    """The peering identity to give kopf, or None to let kopf make its own.

    kopf names itself ``user@host`` through :func:`getpass.getuser`, which raises when the
    process runs as a uid without a passwd entry (the chart's 65532, any ``runAsUser``) and no
    ``USER``/``LOGNAME``/``POD_ID`` is set: the operator would die at start.
    """
    if os.environ.get("POD_ID"):
        return None
    try:
        getpass.getuser()
        return None
    except (KeyError, OSError):
        return f"uid-{os.getuid()}@{socket.gethostname()}/{os.getpid()}"


def run(config: OperatorConfig) -> int:
    """Run the operator until SIGINT/SIGTERM; returns the exit code."""
    configure_logging(config.log_format, config.verbose)
    from detectionjob_operator import handlers  # noqa: F401  (registers the handlers)

    kopf.on.startup()(make_startup(config))
    priority = config.priority
    if priority is None:
        # kopf pauses every replica whose highest-priority peers tie; replicas of one Deployment
        # get the same flags, so each picks its own priority.
        priority = random.randint(1, 2**30) if config.peering else 0
    kwargs: dict[str, Any] = {
        "standalone": config.peering is None,
        "peering_name": config.peering,
        "priority": priority,
        "liveness_endpoint": config.liveness,
        "memo": kopf.Memo(),
    }
    identity = own_identity()
    if identity:
        kwargs["identity"] = identity
    if config.namespaces:
        kwargs["namespaces"] = list(config.namespaces)
    else:
        kwargs["clusterwide"] = True
    kopf.run(**kwargs)
    return 0
