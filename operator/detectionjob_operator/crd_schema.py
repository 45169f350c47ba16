"""The DetectionJob CRD's OpenAPI schema, applied without a cluster.

``detectionjob render`` and the operator validate a spec against the same schema the API server
uses (loaded from the CRD file, the single source of truth), and apply its defaults the way the
API server does: nulls count as absent, then defaults fill absent fields. Only the keywords the
CRD uses are implemented; CEL rules (``x-kubernetes-validations``) are re-stated in
:mod:`detectionjob_operator.spec`.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

import yaml

from inference.detectionjob_api import VERSION

CRD_FILE = "detectionjob.dev_detectionjobs.yaml"


class SpecError(ValueError):
    """An invalid DetectionJob; ``path`` names the field, e.g. ``spec.workers.minReplicas``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@functools.cache
def crd() -> dict[str, Any]:
    """The CRD document shipped with the package (a link to manifests/crd/)."""
    text = resources.files(__package__).joinpath(CRD_FILE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def openapi_schema() -> dict[str, Any]:
    """The ``openAPIV3Schema`` of the served version."""
    for version in crd()["spec"]["versions"]:
        if version["name"] == VERSION:
            return version["schema"]["openAPIV3Schema"]
    raise LookupError(f"{CRD_FILE} has no version {VERSION}")


def spec_schema() -> dict[str, Any]:
    return openapi_schema()["properties"]["spec"]


@functools.cache
def _regex(pattern: str) -> re.Pattern[str]:
    # The API server matches with Go's RE2, where ``$`` is the end of the text; in Python it may
    # also match before a final newline, so make the end explicit.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _check_type(schema: Mapping[str, Any], value: Any, path: str) -> None:
    got = _type_name(value)
    if schema.get("x-kubernetes-int-or-string"):
        if got not in ("integer", "string"):
            raise SpecError(path, f"must be an integer or a string, not {got}")
        return
    want = schema.get("type")
    if want is None or want == got or (want == "number" and got == "integer"):
        return
    raise SpecError(path, f"must be {'an' if want[0] in 'aeiou' else 'a'} {want}, not {got}")


def _check_scalar(schema: Mapping[str, Any], value: Any, path: str) -> None:
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(str(v) for v in schema["enum"])
        raise SpecError(path, f"must be one of {allowed}, not {value!r}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise SpecError(path, f"must be at least {schema['minLength']} characters long")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise SpecError(path, f"must be at most {schema['maxLength']} characters long")
        if "pattern" in schema and not _regex(schema["pattern"]).search(value):
            raise SpecError(path, f"{value!r} does not match {schema['pattern']}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise SpecError(path, f"must be >= {schema['minimum']}, not {value}")
        if "maximum" in schema and value > schema["maximum"]:
            raise SpecError(path, f"must be <= {schema['maximum']}, not {value}")


def _check_object(schema: Mapping[str, Any], value: Mapping[str, Any], path: str) -> dict:
    props: Mapping[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise SpecError(path, f"keys must be strings, not {_type_name(key)}")
        if item is None:  # the API server drops nulls of non-nullable fields before defaulting
            continue
        sub = f"{path}.{key}"
        if key in props:
            out[key] = validate(props[key], item, sub)
        elif isinstance(extra, Mapping):
            out[key] = validate(extra, item, sub)
        elif not schema.get("x-kubernetes-preserve-unknown-fields"):
            raise SpecError(sub, "unknown field")
        else:
            out[key] = copy.deepcopy(item)
    for key, prop in props.items():
        if key not in out and "default" in prop:
            out[key] = validate(prop, copy.deepcopy(prop["default"]), f"{path}.{key}")
    for key in schema.get("required", ()):
        if key not in out:
            raise SpecError(f"{path}.{key}", "required field is missing")
    if "maxProperties" in schema and len(out) > schema["maxProperties"]:
        raise SpecError(path, f"must have at most {schema['maxProperties']} entries")
    return out


def validate(schema: Mapping[str, Any], value: Any, path: str) -> Any:
    """``value`` with defaults applied; raises :class:`SpecError` naming the first bad field."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SpecError(path, f"must be a finite number, not {value}")
        integral = schema.get("type") == "integer" or schema.get("x-kubernetes-int-or-string")
        if integral and value.is_integer():
            value = int(value)  # JSON has one number type: 4.0 is the integer 4
    _check_type(schema, value, path)
    if isinstance(value, Mapping):
        return _check_object(schema, value, path)
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            raise SpecError(path, f"must have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise SpecError(path, f"must have at most {schema['maxItems']} items")
        items = schema.get("items", {})
        return [validate(items, item, f"{path}[{i}]") for i, item in enumerate(value)]
    _check_scalar(schema, value, path)
    return value


def cel_messages(schema: Mapping[str, Any] | None = None) -> set[str]:
    """Every ``x-kubernetes-validations`` message in the schema (to check spec.py covers them)."""
    schema = openapi_schema() if schema is None else schema
    found = {rule["message"] for rule in schema.get("x-kubernetes-validations", ())}
    for sub in schema.get("properties", {}).values():
        found |= cel_messages(sub)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), Mapping):
            found |= cel_messages(schema[key])
    return found
