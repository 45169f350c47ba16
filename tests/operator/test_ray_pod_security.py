"""Every Pod a DetectionJob's RayJob describes passes the "restricted" Pod Security Standard."""

from __future__ import annotations

import copy

import pytest
from detectionjob_operator.spec import parse
from detectionjob_operator.translate import to_rayjob
from djtest import make_dj
from kubernetes import client
from kubernetes.client.rest import ApiException


def pod_templates(rayjob: dict) -> dict[str, dict]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    templates = {"head": cluster["headGroupSpec"]["template"],
                 "submitter": rayjob["spec"]["submitterPodTemplate"]}
    for group in cluster["workerGroupSpecs"]:
        templates[f"worker-{group['groupName']}"] = group["template"]
    return templates


AUTOSCALING = {"workers": {"minReplicas": 1, "maxReplicas": 3, "gpusPerWorker": 1}}


@pytest.mark.parametrize("spec", [{}, AUTOSCALING], ids=["fixed", "autoscaling"])
def test_every_container_is_restricted(spec):
    rayjob = to_rayjob(parse(make_dj(spec, uid="u1")))
    for name, template in pod_templates(rayjob).items():
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"] == {"drop": ["ALL"]}
    autoscaler = rayjob["spec"]["rayClusterSpec"].get("autoscalerOptions")
    if spec:
        assert autoscaler["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    else:
        assert autoscaler is None


@pytest.mark.cluster
def test_ray_pods_admitted_in_a_restricted_namespace(kube):
    namespace = "dj-restricted-pods"
    kube.create_namespace(namespace, labels={"pod-security.kubernetes.io/enforce": "restricted"})
    core = client.CoreV1Api(kube.api_client())
    rayjob = to_rayjob(parse(make_dj(AUTOSCALING, uid="u1")))
    head_account = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    core.create_namespaced_service_account(  # the operator creates it beside the RayJob
        namespace, {"metadata": {"name": head_account["serviceAccountName"]}})
    for name, template in pod_templates(rayjob).items():
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"ray-{name}"},
               "spec": copy.deepcopy(template["spec"])}
        if name == "submitter":  # KubeRay adds the command
            pod["spec"]["containers"][0]["command"] = ["ray", "job", "submit"]
        core.create_namespaced_pod(namespace, pod)
    autoscaler = rayjob["spec"]["rayClusterSpec"]["autoscalerOptions"]["securityContext"]
    sidecar = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ray-autoscaler"},
               "spec": {"securityContext": rayjob["spec"]["submitterPodTemplate"]["spec"]["securityContext"],
                        "containers": [{"name": "autoscaler", "image": "x", "securityContext": autoscaler}]}}
    core.create_namespaced_pod(namespace, sidecar)

    bare = copy.deepcopy(pod_templates(rayjob)["head"]["spec"])  # negative control
    del bare["securityContext"]
    for container in bare["containers"]:
        del container["securityContext"]
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(namespace, {"apiVersion": "v1", "kind": "Pod",
                                               "metadata": {"name": "unrestricted"}, "spec": bare})
    assert err.value.status == 403 and "restricted" in err.value.body
