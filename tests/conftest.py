"""Shared pytest setup: the real control-plane fixtures (kube, kuberay, minio_s3)."""

import signal

from harness.fixtures import *  # noqa: F401,F403


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config) -> None:
    """SIGTERM stops a run like Ctrl-C: fixtures are finalized, so every process, Pod, chain and
    mount a test started is torn down. hack/test.sh runs the e2e tests in the background, where
    SIGINT is ignored, and stops them with SIGTERM."""
    signal.signal(signal.SIGTERM, _interrupt)
