"""The DetectionJob API's names and a Kubernetes API client: shared by the job (it reports its
progress into its DetectionJob's status) and the operator, defined here once."""

from __future__ import annotations

from typing import Any

GROUP = "detectionjob.dev"
VERSION = "v1alpha1"
KIND = "DetectionJob"
PLURAL = "detectionjobs"
API_VERSION = f"{GROUP}/{VERSION}"
MERGE_PATCH = "application/merge-patch+json"


def new_api_client(pool_size: int | None = None) -> Any:
    """A ``kubernetes`` API client from the in-cluster config, else the kubeconfig ($KUBECONFIG)."""
    from kubernetes import client, config

    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        config.load_kube_config(client_configuration=cfg)
    if pool_size is not None:
        cfg.connection_pool_maxsize = pool_size
    return client.ApiClient(cfg)
