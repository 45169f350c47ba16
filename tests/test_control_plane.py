"""The test control plane is real: each part is exercised through its own program.

These tests need the binaries from ``bash hack/build-binaries.sh``; without
them the fixtures fail (they do not skip).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import harness
import pytest
import yaml
from harness import wait_for

pytestmark = pytest.mark.cluster


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_namespace_round_trip(kube):
    from kubernetes import client

    core = client.CoreV1Api(kube.api_client())
    name = unique("roundtrip")
    kube.create_namespace(name, labels={"detectionjob.test/purpose": "round-trip"})

    ns = core.read_namespace(name)
    assert ns.metadata.labels["detectionjob.test/purpose"] == "round-trip"
    assert ns.metadata.uid and ns.status.phase == "Active"
    # The serviceaccount controller (kube-controller-manager) fills new namespaces.
    wait_for(
        "the default ServiceAccount",
        lambda: core.list_namespaced_service_account(name, field_selector="metadata.name=default").items,
        60,
    )

    core.delete_namespace(name)

    # Only the namespace controller can finalize a deletion: this proves it runs.
    def gone():
        try:
            core.read_namespace(name)
        except client.ApiException as e:
            return e.status == 404
        return False

    wait_for(f"namespace {name} to be finalized", gone, 90)


def test_garbage_collector_deletes_children(kube):
    from kubernetes import client

    core = client.CoreV1Api(kube.api_client())
    ns = unique("gc")
    kube.create_namespace(ns)
    owner = core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"), data={"a": "1"})
    )
    ref = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
    core.create_namespaced_secret(
        ns,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="child", owner_references=[ref]),
            string_data={"k": "v"},
        ),
    )
    assert core.read_namespaced_secret("child", ns).metadata.owner_references[0].uid == (owner.metadata.uid)

    core.delete_namespaced_config_map(
        "owner", ns, body=client.V1DeleteOptions(propagation_policy="Background")
    )

    def child_gone():
        try:
            core.read_namespaced_secret("child", ns)
        except client.ApiException as e:
            return e.status == 404
        return False

    wait_for("the garbage collector to delete the child Secret", child_gone, 60)
    core.delete_namespace(ns)


def test_pod_security_restricted_is_enforced(kube):
    ns = unique("psa")
    kube.create_namespace(ns, labels={"pod-security.kubernetes.io/enforce": "restricted"})
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged", "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1d"]}]},
    }
    r = kube.kubectl("apply", "-f", "-", input=json.dumps(pod), check=False)
    assert r.returncode != 0
    assert 'violates PodSecurity "restricted' in r.stderr, r.stderr
    # The same Pod is admitted where no Pod Security level is enforced.
    other = unique("psa-free")
    kube.create_namespace(other)
    pod["metadata"]["namespace"] = other
    wait_for(
        "the Pod to be admitted (default ServiceAccount must exist first)",
        lambda: kube.kubectl("apply", "-f", "-", input=json.dumps(pod), check=False).returncode == 0,
        30,
        interval=0.5,
    )
    kube.kubectl("delete", "namespace", other, "--wait=false")
    kube.kubectl("delete", "namespace", ns, "--wait=false")


def test_serviceaccount_token_and_rbac(kube):
    ns = unique("rbac")
    kube.create_namespace(ns)
    sa_kubeconfig = kube.serviceaccount_kubeconfig(ns, "reader")

    def as_sa(*args, check=False):
        return harness.kube._run(
            [str(kube.bin("kubectl")), f"--kubeconfig={sa_kubeconfig}", *args], check=check
        )

    who = json.loads(as_sa("auth", "whoami", "-o", "json", check=True).stdout)
    assert who["status"]["userInfo"]["username"] == f"system:serviceaccount:{ns}:reader"

    denied = as_sa("get", "configmaps")
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    assert as_sa("auth", "can-i", "list", "configmaps").stdout.strip() == "no"

    kube.kubectl("create", "role", "cm-reader", "-n", ns, "--verb=get,list", "--resource=configmaps")
    kube.kubectl(
        "create", "rolebinding", "cm-reader", "-n", ns,
        "--role=cm-reader", f"--serviceaccount={ns}:reader",
    )  # fmt: skip
    wait_for("RBAC to allow the read", lambda: as_sa("get", "configmaps").returncode == 0, 30)
    assert as_sa("auth", "can-i", "delete", "configmaps").stdout.strip() == "no"
    assert as_sa("get", "configmaps", "-n", "default").returncode != 0  # Role is namespaced
    kube.kubectl("delete", "namespace", ns, "--wait=false")


def test_kubectl_and_helm_talk_to_the_apiserver(kube, tmp_path: Path):
    version = json.loads(kube.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    assert "namespace/default" in kube.kubectl("get", "namespaces", "-o", "name").stdout

    chart = tmp_path / "harness-probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v2", "name": "harness-probe", "version": "0.1.0"})
    )
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-probe\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    ns = unique("helm")
    kube.create_namespace(ns)
    kube.helm("install", "probe", str(chart), "-n", ns, "--set", "greeting=hi")
    cm = json.loads(kube.kubectl("get", "configmap", "probe-probe", "-n", ns, "-o", "json").stdout)
    assert cm["data"]["greeting"] == "hi"
    releases = json.loads(kube.helm("list", "-n", ns, "-o", "json").stdout)
    assert [r["name"] for r in releases] == ["probe"] and releases[0]["status"] == "deployed"
    kube.helm("uninstall", "probe", "-n", ns)
    r = kube.kubectl("get", "configmap", "probe-probe", "-n", ns, check=False)
    assert r.returncode != 0 and "NotFound" in r.stderr
    kube.kubectl("delete", "namespace", ns, "--wait=false")


def test_kuberay_sample_rayjob_creates_raycluster(kube, kuberay):
    from kubernetes import client

    assert harness.KUBERAY_WATCH_NAMESPACES == ("default", "kuberay-watched")
    ns = "kuberay-watched"
    sample = Path(kube.bin("kuberay-samples")) / "ray-job.sample.yaml"
    docs = [d for d in yaml.safe_load_all(sample.read_text()) if d]
    rayjob = next(d for d in docs if d["kind"] == "RayJob")
    name = rayjob["metadata"]["name"]
    kube.kubectl("apply", "-n", ns, "-f", str(sample))

    custom = client.CustomObjectsApi(kube.api_client())

    def cluster_name():
        job = custom.get_namespaced_custom_object("ray.io", "v1", ns, "rayjobs", name)
        return job.get("status", {}).get("rayClusterName")

    rc_name = wait_for("KubeRay to set status.rayClusterName", cluster_name, 90)
    job = custom.get_namespaced_custom_object("ray.io", "v1", ns, "rayjobs", name)
    rc = wait_for(
        f"RayCluster {rc_name}",
        lambda: next(
            (
                c
                for c in custom.list_namespaced_custom_object("ray.io", "v1", ns, "rayclusters")["items"]
                if c["metadata"]["name"] == rc_name
            ),
            None,
        ),
        60,
    )
    owners = rc["metadata"].get("ownerReferences", [])
    assert any(o["kind"] == "RayJob" and o["uid"] == job["metadata"]["uid"] for o in owners)

    # The RayCluster controller goes on to create the head Pod (which never
    # runs: there is no kubelet).
    core = client.CoreV1Api(kube.api_client())
    head = wait_for(
        "the head Pod",
        lambda: (
            core.list_namespaced_pod(
                ns, label_selector=f"ray.io/cluster={rc_name},ray.io/node-type=head"
            ).items
        ),
        60,
    )
    assert head[0].metadata.owner_references[0].kind == "RayCluster"

    # Deleting the RayJob removes its RayCluster (owner reference + GC / KubeRay).
    custom.delete_namespaced_custom_object("ray.io", "v1", ns, "rayjobs", name)

    def rc_gone():
        items = custom.list_namespaced_custom_object("ray.io", "v1", ns, "rayclusters")["items"]
        return all(c["metadata"]["name"] != rc_name for c in items)

    wait_for(f"RayCluster {rc_name} to be deleted", rc_gone, 90)
    kube.kubectl("delete", "-n", ns, "-f", str(sample), "--ignore-not-found")


def test_kuberay_ignores_unwatched_namespaces(kube, kuberay):
    from kubernetes import client

    ns = unique("unwatched")
    kube.create_namespace(ns)
    sample = Path(kube.bin("kuberay-samples")) / "ray-job.sample.yaml"
    kube.kubectl("apply", "-n", ns, "-f", str(sample))
    custom = client.CustomObjectsApi(kube.api_client())
    # Give the operator ample time to (wrongly) react, then check it did not.
    time.sleep(5)
    job = custom.get_namespaced_custom_object("ray.io", "v1", ns, "rayjobs", "rayjob-sample")
    assert not job.get("status"), job.get("status")
    assert custom.list_namespaced_custom_object("ray.io", "v1", ns, "rayclusters")["items"] == []
    kube.kubectl("delete", "namespace", ns, "--wait=false")


def test_minio_parquet_round_trip(minio_s3):
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"image": ["a.jpg", "b.jpg"], "score": [0.9, 0.25]})
    fs = minio_s3.filesystem()
    path = f"{minio_s3.bucket}/roundtrip/{unique('t')}.parquet"
    pq.write_table(table, path, filesystem=fs)
    assert fs.get_file_info(path).size > 0
    assert pq.read_table(path, filesystem=fs).equals(table)

    # The exported AWS_* variables alone are enough for pyarrow to resolve s3:// URIs.
    assert os.environ["AWS_ENDPOINT_URL"] == minio_s3.endpoint_url
    assert pq.read_table(f"s3://{path}").equals(table)
