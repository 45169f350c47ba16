"""Generated DetectionJobs (from the CRD's own schema, with junk mixed in) through validation and
translation: a clear SpecError naming a field, or a RayJob KubeRay accepts; never another error."""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter

import yaml
from detectionjob_operator import crd_schema as schema
from detectionjob_operator.crd_schema import SpecError
from detectionjob_operator.spec import parse
from detectionjob_operator.translate import ENTRYPOINT, to_rayjob
from djtest import MINIMAL, assert_accepted_by_kuberay
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HOSTILE = st.sampled_from(["$(id)", "`id`", ";id", "'", '"', "\n", "\\", "${IFS}", "\x00", "ü"])
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | HOSTILE,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=6,
)


def _string(node: dict) -> st.SearchStrategy:
    options = [st.text(max_size=12), HOSTILE]
    if "pattern" in node:
        options.append(st.from_regex(node["pattern"], fullmatch=True).filter(
            lambda s: len(s) <= node.get("maxLength", 10**6)))
        options.append(st.from_regex(node["pattern"], fullmatch=True).map(lambda s: s + "$(id)"))
    if "enum" in node:
        options.append(st.sampled_from(node["enum"]))
    return st.one_of(*options)


def from_schema(node: dict) -> st.SearchStrategy:
    """Mostly schema-shaped values, sometimes junk, sometimes just out of bounds."""
    if node.get("x-kubernetes-int-or-string"):
        valid = st.integers(-2, 64) | _string(node)
    elif node.get("type") == "string":
        valid = _string(node)
    elif node.get("type") == "integer":
        low, high = node.get("minimum", -10) - 2, min(node.get("maximum", 10**4), 10**4) + 2
        valid = st.integers(low, high)
    elif node.get("type") == "number":
        valid = st.floats(node.get("minimum", -1) - 1, node.get("maximum", 1) + 1) | st.integers(-1, 2)
    elif node.get("type") == "boolean":
        valid = st.booleans()
    elif node.get("type") == "array":
        valid = st.lists(from_schema(node.get("items", {})), max_size=3)
    elif "properties" in node:
        valid = st.fixed_dictionaries(
            {}, optional={k: from_schema(v) for k, v in node["properties"].items()})
    elif isinstance(node.get("additionalProperties"), dict):
        keys = st.from_regex(r"[a-z0-9.]{1,8}(/[a-z0-9]{1,8})?", fullmatch=True) | st.text(max_size=8)
        valid = st.dictionaries(keys, from_schema(node["additionalProperties"]), max_size=3)
    else:
        valid = JUNK
    return st.one_of(valid, valid, valid, valid, valid, valid, valid, JUNK)


BASE_SPEC = MINIMAL["spec"]


@st.composite
def documents(draw) -> dict:
    props = schema.spec_schema()["properties"]
    spec = dict(BASE_SPEC) if draw(st.integers(0, 9)) else {}
    for key in draw(st.lists(st.sampled_from(sorted(props)), max_size=4, unique=True)):
        spec[key] = draw(from_schema(props[key]))
    doc = {**MINIMAL, "spec": spec}
    if draw(st.integers(0, 9)) == 0:
        doc["metadata"] = draw(JUNK | st.fixed_dictionaries({"name": st.text(max_size=70)}))
    return doc


def check_translation(dj, rayjob_schema) -> None:
    rayjob = to_rayjob(dj)
    assert_accepted_by_kuberay(rayjob, rayjob_schema)
    spec = rayjob["spec"]
    assert spec["entrypoint"] == ENTRYPOINT
    runtime_env = spec["runtimeEnvYAML"]
    assert runtime_env.isascii() and "$" not in runtime_env and "`" not in runtime_env
    env = yaml.safe_load(runtime_env)["env_vars"]
    args = json.loads(env["DETECTIONJOB_ARGS"])
    assert args["input"] == dj.spec.input.location.job_uri("/mnt/detectionjob/input")
    assert args["weights"] == dj.spec_values["model"]["weights"]
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", rayjob["metadata"]["name"])
    group = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert group["maxReplicas"] >= 1


def test_generated_specs_validate_or_translate(kuberay_rayjob_schema):
    rayjob_schema = kuberay_rayjob_schema
    counts: Counter[str] = Counter()
    fields = set(schema.spec_schema()["properties"])

    @settings(max_examples=1200, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(documents())
    def check(doc):
        try:
            dj = parse(doc)
        except SpecError as err:
            counts["invalid"] += 1
            parts = re.split(r"[.\[]", err.path)
            assert parts[0] in ("spec", "apiVersion", "kind", "metadata", "<document>"), err.path
            assert parts[0] != "spec" or len(parts) == 1 or parts[1] in fields, err.path
            assert err.message
            return
        counts["valid"] += 1
        check_translation(dj, rayjob_schema)

    check()
    assert counts["valid"] + counts["invalid"] >= 1000
    assert counts["valid"] >= 100 and counts["invalid"] >= 100, counts


@settings(max_examples=300, deadline=None, database=None)
@given(JUNK)
def test_any_document_fails_cleanly(doc):
    with contextlib.suppress(SpecError):
        parse(doc)
