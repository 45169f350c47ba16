"""The kustomize manifests, offline: they render, and the base is equal in effect to the
chart's default install (`helm install detectionjob-operator -n detectionjob-system`).

Applying them to a real apiserver is in test_kustomize_apply.py.
"""

from __future__ import annotations

import copy

import yaml
from install._support import NAMESPACE, RELEASE, REPO, by_kind, load_all, one, run

BASE = REPO / "manifests" / "base"
EXAMPLE = REPO / "manifests" / "overlays" / "example"

#: Labels that only say who rendered an object.
RENDERER_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")


def kustomize(kubectl_bin, path):
    return load_all(run([kubectl_bin, "kustomize", path]).stdout)


def _normalize(obj):
    obj = copy.deepcopy(obj)
    for meta in (obj["metadata"], obj.get("spec", {}).get("template", {}).get("metadata", {})):
        labels = meta.get("labels", {})
        for key in RENDERER_LABELS:
            labels.pop(key, None)
    return obj


def _index(objs):
    return {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): _normalize(o)
            for o in objs}


def test_base_equals_chart_defaults(kubectl_bin, render):
    base = _index(kustomize(kubectl_bin, BASE))
    chart = _index(render(crds=True, release=RELEASE, namespace=NAMESPACE))
    # The chart leaves the namespace to `helm install --create-namespace`.
    ns = base.pop(("Namespace", None, NAMESPACE))
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert sorted(base) == sorted(chart)
    for key in chart:
        assert base[key] == chart[key], f"{key} differs between manifests/base and the chart"


def test_base_contents(kubectl_bin):
    objs = kustomize(kubectl_bin, BASE)
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted(["CustomResourceDefinition"] * 3 + [
        "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment",
        "Service"])
    crds = {o["metadata"]["name"] for o in by_kind(objs, "CustomResourceDefinition")}
    assert crds == {"detectionjobs.detectionjob.dev", "kopfpeerings.kopf.dev",
                    "clusterkopfpeerings.kopf.dev"}
    source = yaml.safe_load((REPO / "manifests/crd/detectionjob.dev_detectionjobs.yaml").read_text())
    rendered = [o for o in by_kind(objs, "CustomResourceDefinition")
                if o["metadata"]["name"] == "detectionjobs.detectionjob.dev"][0]
    assert rendered == source  # kustomize must not alter the CRD


def test_example_overlay_is_base_plus_example(kubectl_bin):
    base = kustomize(kubectl_bin, BASE)
    objs = kustomize(kubectl_bin, EXAMPLE)
    dj = one(objs, "DetectionJob")
    assert [o for o in objs if o["kind"] != "DetectionJob"] == base
    example = yaml.safe_load((REPO / "examples" / "detectionjob.yaml").read_text())
    annotations = dj["metadata"].pop("annotations")
    assert annotations == {"argocd.argoproj.io/sync-options": "SkipDryRunOnMissingResource=true"}
    example["metadata"].pop("annotations", None)
    assert dj == example  # same spec: only an annotation added
