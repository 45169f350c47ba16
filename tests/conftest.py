"""Shared pytest setup: the real control-plane fixtures (kube, kuberay, minio_s3)."""

from harness.fixtures import *  # noqa: F401,F403
