"""Which of the model's label names count as which annotated category, for ``detectionjob evaluate``.

Categories are matched by name. A model's label counts as the annotated category of the same name,
or of a name that :data:`VOC_TO_COCO` or ``--label-map`` maps to it: both map an *annotation's*
category name to the model's label name(s).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from inference.uris import Location

OPTION = "--label-map"

#: Pascal VOC's class names that torchvision's COCO weights spell differently (the other 14 agree).
VOC_TO_COCO: dict[str, str] = {
    "aeroplane": "airplane",
    "diningtable": "dining table",
    "motorbike": "motorcycle",
    "pottedplant": "potted plant",
    "sofa": "couch",
    "tvmonitor": "tv",
}


class LabelMapError(ValueError):
    """A ``--label-map`` that cannot be used; the message names the file and the entry."""


def read_label_map(loc: Location) -> dict[str, list[str]]:
    """A YAML or JSON mapping of annotation category name -> model label name (or a list of them)."""
    uri = loc.uri(loc.path)
    try:
        with loc.fs.open_input_stream(loc.path) as f:
            text = f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelMapError(f"{OPTION}: {uri}: cannot be read: {exc}") from None
    return check_label_map(_parse(text, uri), uri)


def _parse(text: str, uri: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if uri.lower().endswith(".json"):
            raise LabelMapError(f"{OPTION}: {uri}: not JSON: {exc}") from None
    try:
        import yaml
    except ModuleNotFoundError:
        raise LabelMapError(f"{OPTION}: {uri}: not JSON, and PyYAML (to read YAML) is not installed"
                            ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LabelMapError(f"{OPTION}: {uri}: not YAML or JSON: {' '.join(str(exc).split())}") from None


def check_label_map(data: object, uri: str) -> dict[str, list[str]]:
    """``{name: name}`` or ``{name: [names]}``, all strings; anything else names the entry."""
    if not isinstance(data, Mapping):
        raise LabelMapError(f"{OPTION}: {uri}: expected a mapping of annotation name -> model label name, "
                            f"got {type(data).__name__}")
    out: dict[str, list[str]] = {}
    for key, value in data.items():
        targets = value if isinstance(value, list) else [value]
        if not isinstance(key, str) or not targets or not all(isinstance(t, str) for t in targets):
            raise LabelMapError(f"{OPTION}: {uri}: entry {key!r}: {value!r} is not a label name "
                                "(a string, or a list of strings)")
        out[key] = targets
    return out


def label_lookup(categories: list[str], label_map: Mapping[str, list[str]] | None = None,
                 uri: str = OPTION) -> dict[str, int]:
    """Model label name -> index of the annotated category it counts as.

    Each category takes its own name; then :data:`VOC_TO_COCO`'s name for it, unless another
    category has that name; then ``label_map``'s names, which override both.
    """
    index = {name: i for i, name in enumerate(categories)}
    lookup = dict(index)
    for name, i in index.items():
        coco = VOC_TO_COCO.get(name)
        if coco is not None and coco not in index:
            lookup[coco] = i
    claimed: dict[str, str] = {}
    for name, labels in (label_map or {}).items():
        if name not in index:
            raise LabelMapError(f"{OPTION}: {uri}: {name!r} is not a category of the annotations "
                                f"(they have {_some(categories)})")
        for label in labels:
            if label in claimed and claimed[label] != name:
                raise LabelMapError(f"{OPTION}: {uri}: {label!r} is mapped from both {claimed[label]!r} "
                                    f"and {name!r}")
            claimed[label] = name
            lookup[label] = index[name]
    return lookup


def _some(names: list[str], n: int = 8) -> str:
    shown = ", ".join(repr(x) for x in names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")
