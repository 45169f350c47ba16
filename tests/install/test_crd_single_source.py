"""One source of truth: manifests/crd/ holds the CRD; the chart's crds/ and the example
overlay hold byte-equal copies (refresh them with hack/sync-crd.sh, which also regenerates
manifests/base from the chart: test_generated_manifests.py)."""

from __future__ import annotations

import os

import pytest
import yaml
from install._support import CHART, REPO, run

CRD = REPO / "manifests" / "crd" / "detectionjob.dev_detectionjobs.yaml"
COPIES = [
    (CRD, CHART / "crds" / "detectionjob.dev_detectionjobs.yaml"),
    (REPO / "manifests" / "base" / "kopf.dev_peerings.yaml", CHART / "crds" / "kopf.dev_peerings.yaml"),
    (REPO / "examples" / "detectionjob.yaml",
     REPO / "manifests" / "overlays" / "example" / "detectionjob.yaml"),
]


@pytest.mark.parametrize("src,copy", COPIES, ids=[c.name for _, c in COPIES])
def test_copy_is_byte_equal(src, copy):
    assert copy.read_bytes() == src.read_bytes(), (
        f"{copy.relative_to(REPO)} differs from {src.relative_to(REPO)}: run hack/sync-crd.sh")


def test_sync_script_check_mode(helm_bin):
    # The check also renders the chart into manifests/base (test_generated_manifests.py).
    proc = run(["bash", REPO / "hack" / "sync-crd.sh", "--check"], check=False,
               env={**os.environ, "HELM": helm_bin})
    assert proc.returncode == 0, proc.stderr


def test_chart_crds_are_exactly_these():
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == [
        "detectionjob.dev_detectionjobs.yaml", "kopf.dev_peerings.yaml"]


def test_kustomize_uses_the_source_not_a_copy():
    crd_kust = yaml.safe_load((REPO / "manifests" / "crd" / "kustomization.yaml").read_text())
    assert crd_kust["resources"] == [CRD.name]
    base = yaml.safe_load((REPO / "manifests" / "base" / "kustomization.yaml").read_text())
    assert "../crd" in base["resources"]
    # No other DetectionJob CRD anywhere under manifests/ or charts/.
    for path in [*REPO.glob("manifests/**/*.yaml"), *REPO.glob("charts/**/*.yaml")]:
        if path in (CRD, CHART / "crds" / CRD.name):
            continue
        assert "detectionjobs.detectionjob.dev" not in path.read_text() or path.name.startswith(
            "kustomization"), f"another copy of the CRD in {path.relative_to(REPO)}"


def test_crd_identity():
    crd = yaml.safe_load(CRD.read_text())
    assert crd["metadata"]["name"] == "detectionjobs.detectionjob.dev"
    spec = crd["spec"]
    assert spec["group"] == "detectionjob.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["plural"] == "detectionjobs"
    assert "dj" in spec["names"]["shortNames"]
    assert [v["name"] for v in spec["versions"] if v["served"]] == ["v1alpha1"]
    # The operator writes only status: it must be a subresource, so that a GitOps tool
    # owning the spec and the operator owning status never overwrite each other.
    assert spec["versions"][0]["subresources"]["status"] == {}
