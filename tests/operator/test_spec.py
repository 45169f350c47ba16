"""Validation: clear errors naming the field; the CRD's rules re-stated without a cluster."""

from __future__ import annotations

import pytest
import yaml
from detectionjob_operator import crd_schema as schema
from detectionjob_operator.crd_schema import SpecError
from detectionjob_operator.spec import TRANSITION_RULE_MARK, parse, parse_spec
from djtest import make_dj


def error_of(doc) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse(doc)
    return info.value


@pytest.mark.parametrize(("spec", "path", "text"), [
    ({"input": None}, "spec.input", "required"),
    ({"image": None}, "spec.image", "required"),
    ({"input": {"uri": "http://x/y"}}, "spec.input.uri", "does not match"),
    ({"input": {"uri": "s3://b/x\n"}}, "spec.input.uri", "does not match"),
    ({"input": {"pvc": {"claimName": "c"}}}, "spec.input", "exactly one of"),
    ({"output": {"uri": None}}, "spec.output", "exactly one of"),
    ({"input": {"uri": None, "pvc": {"claimName": "c", "path": "../etc"}}},
     "spec.input.pvc.path", "relative path"),
    ({"input": {"uri": None, "pvc": {"claimName": "c", "path": "/etc"}}},
     "spec.input.pvc.path", "relative path"),
    ({"input": {"fileExtensions": []}}, "spec.input.fileExtensions", "at least 1"),
    ({"input": {"fileExtensions": [".jpg"]}}, "spec.input.fileExtensions[0]", "does not match"),
    ({"input": {"limit": 0}}, "spec.input.limit", ">= 1"),
    ({"input": {"secretRef": {}}}, "spec.input.secretRef.name", "required"),
    ({"output": {"mode": "append"}}, "spec.output.mode", "one of overwrite, resume"),
    ({"output": {"samples": -1}}, "spec.output.samples", ">= 0"),
    ({"model": {"name": "Faster RCNN"}}, "spec.model.name", "does not match"),
    ({"model": {"name": "yolo"}}, "spec.model.name", "'yolo' is not a torchvision detection model"),
    ({"model": {"scoreThreshold": 1.5}}, "spec.model.scoreThreshold", "<= 1"),
    ({"model": {"scoreThreshold": float("nan")}}, "spec.model.scoreThreshold", "finite"),
    ({"model": {"scoreThreshold": "0.5"}}, "spec.model.scoreThreshold", "must be a number"),
    ({"model": {"precision": "int8"}}, "spec.model.precision", "one of"),
    ({"batchSize": 0}, "spec.batchSize", ">= 1"),
    ({"batchSize": 2.5}, "spec.batchSize", "must be an integer"),
    ({"batchSize": True}, "spec.batchSize", "must be an integer or a string, not boolean"),
    ({"batchSize": "many"}, "spec.batchSize", "does not match ^auto$"),
    ({"batchSize": 2000}, "spec.batchSize", "<= 1024"),
    ({"workers": {"minReplicas": 3, "maxReplicas": 2}}, "spec.workers.minReplicas", "<="),
    ({"workers": {"replicas": 1, "minReplicas": 2}}, "spec.workers.replicas", ">="),
    ({"workers": {"replicas": 5, "maxReplicas": 2}}, "spec.workers.replicas", "<="),
    ({"workers": {"replicas": 0}}, "spec.workers", "at least one worker"),
    ({"workers": {"minReplicas": 0}}, "spec.workers", "at least one worker"),
    ({"workers": {"maxReplicas": 0}}, "spec.workers.maxReplicas", ">= 1"),
    ({"workers": {"gpusPerWorker": 17}}, "spec.workers.gpusPerWorker", "<= 16"),
    ({"workers": {"cpusPerWorker": "8 cores"}}, "spec.workers.cpusPerWorker", "does not match"),
    ({"workers": {"cpusPerWorker": "0"}}, "spec.workers.cpusPerWorker", "more than 0"),
    ({"workers": {"cpusPerWorker": [8]}}, "spec.workers.cpusPerWorker", "integer or a string"),
    ({"workers": {"memory": "32GB"}}, "spec.workers.memory", "does not match"),
    ({"workers": {"gpuResource": "gpu"}}, "spec.workers.gpuResource", "does not match"),
    ({"workers": {"gpuResource": "memory"}}, "spec.workers.gpuResource", "does not match"),
    ({"workers": {"nodeSelector": {"k": "bad value"}}}, "spec.workers.nodeSelector.k",
     "does not match"),
    ({"workers": {"nodeSelector": {"bad key!": "v"}}}, "spec.workers.nodeSelector['bad key!']",
     "label key"),
    ({"workers": {"tolerations": [{"operator": "Exists", "value": "x"}]}},
     "spec.workers.tolerations[0]", "must not have a value"),
    ({"workers": {"tolerations": [{"effect": "Sometimes"}]}},
     "spec.workers.tolerations[0].effect", "one of"),
    ({"workers": {"replica": 2}}, "spec.workers.replica", "unknown field"),
    ({"head": {"memory": "0"}}, "spec.head.memory", "more than 0"),
    ({"image": "has space:1"}, "spec.image", "does not match"),
    ({"rayVersion": "2.x"}, "spec.rayVersion", "does not match"),
    ({"queueName": "Queue_1"}, "spec.queueName", "does not match"),
    ({"suspend": "yes"}, "spec.suspend", "must be a boolean"),
    ({"activeDeadlineSeconds": 0}, "spec.activeDeadlineSeconds", ">= 1"),
    ({"backoffLimit": 101}, "spec.backoffLimit", "<= 100"),
    ({"ttlSecondsAfterFinished": -1}, "spec.ttlSecondsAfterFinished", ">= 0"),
    ({"inputs": {}}, "spec.inputs", "unknown field"),
])
def test_invalid_field_is_named(spec, path, text):
    err = error_of(make_dj(spec))
    assert err.path == path, str(err)
    assert text in err.message
    assert str(err).startswith(path + ": ")


@pytest.mark.parametrize(("doc", "path"), [
    (None, "<document>"),
    ([], "<document>"),
    ({**make_dj(), "apiVersion": "v1"}, "apiVersion"),
    ({**make_dj(), "kind": "Job"}, "kind"),
    ({**make_dj(), "metadata": None}, "metadata"),
    (make_dj(name="Bad_Name"), "metadata.name"),
    (make_dj(namespace="a.b"), "metadata.namespace"),
    ({**make_dj(), "spec": None}, "spec"),
    ({**make_dj(), "spec": "x"}, "spec"),
])
def test_invalid_document(doc, path):
    assert error_of(doc).path == path


def test_nulls_are_absent_and_defaults_apply():
    doc = make_dj({"model": None, "workers": None, "queueName": None})
    dj = parse(doc)
    assert dj.spec_values["model"]["name"] == "fasterrcnn_resnet50_fpn_v2"
    assert dj.spec.workers.replicas == 1 and dj.spec.queue_name is None
    assert parse_spec(doc["spec"])[1]["model"] == {"name": "fasterrcnn_resnet50_fpn_v2",
                                                   "weights": "DEFAULT", "scoreThreshold": 0.5,
                                                   "precision": "fp32"}
    assert dj.namespace == "team-a"


def test_integral_float_is_an_integer():
    assert parse(make_dj({"batchSize": 8.0})).spec_values["batchSize"] == 8


def test_metadata_from_the_api_server():
    dj = parse(make_dj(uid="abc", generation=3))
    assert (dj.uid, dj.generation) == ("abc", 3)
    doc = make_dj()
    del doc["metadata"]["namespace"]
    assert parse(doc, default_namespace="elsewhere").namespace == "elsewhere"


# One failing spec for every CEL rule in the CRD that does not compare with oldSelf: the rules are
# re-stated in spec.py, and this table fails when the CRD gains a rule spec.py does not know.
CEL_CASES = {
    "exactly one of spec.input.uri, spec.input.pvc and spec.input.manifest.uri must be set":
        {"input": {"pvc": {"claimName": "c"}}},
    "spec.input.manifest.path is a file on spec.input.pvc, which must be set":
        {"input": {"manifest": {"path": "list.txt"}}},
    "exactly one of spec.input.manifest.uri and spec.input.manifest.path must be set":
        {"input": {"uri": None, "manifest": {"uri": "s3://b/list.txt", "path": "list.txt"}}},
    "exactly one of spec.output.uri and spec.output.pvc must be set": {"output": {"uri": None}},
    "must be a relative path without '..'":
        {"input": {"uri": None, "pvc": {"claimName": "c", "path": "a/../b"}}},
    "spec.workers.minReplicas must be <= spec.workers.maxReplicas":
        {"workers": {"minReplicas": 2, "maxReplicas": 1}},
    "spec.workers.replicas must be >= spec.workers.minReplicas":
        {"workers": {"replicas": 1, "minReplicas": 2, "maxReplicas": 3}},
    "spec.workers.replicas must be <= spec.workers.maxReplicas":
        {"workers": {"replicas": 4, "maxReplicas": 3}},
    "spec.workers needs at least one worker (replicas or maxReplicas > 0)":
        {"workers": {"replicas": 0}},
    "a toleration with operator Exists must not have a value":
        {"workers": {"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}},
}


def test_every_cel_rule_is_restated():
    messages = schema.cel_messages()
    static = {m for m in messages if TRANSITION_RULE_MARK not in m}
    assert static == set(CEL_CASES)
    for message, spec in CEL_CASES.items():
        with pytest.raises(SpecError):
            parse(make_dj(spec))
        del message


def test_every_spec_field_but_suspend_is_immutable():
    spec = schema.spec_schema()
    immutable = {m.split(" ")[0] for m in schema.cel_messages() if TRANSITION_RULE_MARK in m}
    assert immutable == {f"spec.{name}" for name in spec["properties"] if name != "suspend"}


def test_crd_shape():
    crd = schema.crd()
    assert crd["metadata"]["name"] == "detectionjobs.detectionjob.dev"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "DetectionJob", "detectionjobs", ["dj"])
    assert crd["spec"]["scope"] == "Namespaced"
    (version,) = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Phase", "Progress", "Model", "GPUs", "Age", "Message"} <= columns


def _walk(node, path="openAPIV3Schema"):
    yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _walk(node[key], f"{path}[{key}]")


def test_crd_is_structural_and_documented():
    for path, node in _walk(schema.openapi_schema()):
        assert node.get("type") or node.get("x-kubernetes-int-or-string"), path
        if path.startswith("openAPIV3Schema.spec") and "[" not in path:
            assert node.get("description"), f"{path} has no description"


def test_readme_documents_every_field():
    from djtest import ROOT
    readme = (ROOT / "operator" / "README.md").read_text()
    for path, _ in _walk(schema.spec_schema(), "spec"):
        if "[" in path or path == "spec":
            continue
        assert f"`{path}`" in readme, f"operator/README.md does not document {path}"


def test_manifest_is_the_packaged_crd():
    from djtest import ROOT
    manifest = ROOT / "manifests" / "crd" / "detectionjob.dev_detectionjobs.yaml"
    assert yaml.safe_load(manifest.read_text()) == schema.crd()
