"""Read ground truth for ``detectionjob evaluate``: a COCO instances JSON file or Pascal VOC XML files.

Either becomes one :class:`GroundTruth`: columns of objects (image, category, ``[x, y, w, h]`` box,
area, crowd, difficult) over images named by file name and categories named by name. Local files
and ``s3://`` / ``gs://`` URIs are read through :mod:`inference.uris`. VOC boxes are taken as
written (``xmax - xmin`` wide, no 1-pixel offset); COCO's own ``area`` is kept when the file has it.
"""

from __future__ import annotations

import json
import posixpath
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow.fs as pafs

from inference.uris import Location, list_images

OPTION = "--annotations"
READ_THREADS = 16  # XML files are small: many object-store GETs in flight


class AnnotationError(ValueError):
    """Ground truth that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class GroundTruth:
    """Annotated images and their objects, one numpy column per field (object ``i`` is row ``i``)."""

    source: str  # the --annotations URI
    format: str  # "coco" or "voc"
    file_names: list[str]  # per image, as the annotations write it
    categories: list[str]  # category names; a category's index is its position here
    image: np.ndarray  # int64, per object: index into file_names
    category: np.ndarray  # int64, per object: index into categories
    boxes: np.ndarray  # float64 (N, 4): x, y, width, height in pixels
    area: np.ndarray  # float64: COCO's "area" where given, else width * height
    crowd: np.ndarray  # bool: COCO iscrowd regions
    difficult: np.ndarray  # bool: VOC difficult objects

    @property
    def ignored(self) -> np.ndarray:
        """Objects that count neither as found nor as missed (crowd regions, difficult objects)."""
        return self.crowd | self.difficult

    def objects(self) -> np.ndarray:
        """Ground-truth objects per category, ignored ones left out."""
        return np.bincount(self.category[~self.ignored], minlength=len(self.categories))


def read_annotations(loc: Location) -> GroundTruth:
    """COCO JSON (a ``.json`` file, or any file that is not ``.xml``) or VOC XML (a folder or one file)."""
    info = _info(loc)
    if info.type == pafs.FileType.File and not loc.path.lower().endswith(".xml"):
        return read_coco(loc)
    return read_voc(loc, [loc.path] if info.type == pafs.FileType.File else None)


def _info(loc: Location) -> pafs.FileInfo:
    try:
        info = loc.fs.get_file_info(loc.path)
    except OSError as exc:
        raise AnnotationError(f"{OPTION}: {loc.uri(loc.path)}: cannot be read: {exc}") from None
    if info.type == pafs.FileType.NotFound:
        raise AnnotationError(f"{OPTION}: {loc.uri(loc.path)} does not exist")
    return info


def _read(loc: Location, path: str) -> bytes:
    try:
        with loc.fs.open_input_stream(path) as f:
            return f.read()
    except OSError as exc:
        raise AnnotationError(f"{OPTION}: {loc.uri(path)}: cannot be read: {exc}") from None


# --- COCO ---------------------------------------------------------------------------------------


def read_coco(loc: Location) -> GroundTruth:
    """A COCO instances file: ``images`` (id, file_name), ``categories`` (id, name) and
    ``annotations`` (image_id, category_id, bbox, optional area and iscrowd)."""
    uri = loc.uri(loc.path)
    try:
        data = json.loads(_read(loc, loc.path))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(f"{OPTION}: {uri}: not a COCO JSON file: {exc}") from None

    def bad(what: str) -> AnnotationError:
        return AnnotationError(f"{OPTION}: {uri}: {what}")

    if not isinstance(data, dict):
        raise bad("expected a JSON object with images, annotations and categories, "
                  f"got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise bad(f"no {key!r} list (a COCO instances file has images, annotations and categories)")
    image_ids, file_names = _fields(data["images"], "images", ("id", "file_name"), bad)
    category_ids, names = _fields(data["categories"], "categories", ("id", "name"), bad)
    _unique(category_ids, "categories", "id", bad)
    _unique(names, "categories", "name", bad)
    _unique(image_ids, "images", "id", bad)
    anns = data["annotations"]
    refs = _fields(anns, "annotations", ("image_id", "category_id", "bbox"), bad)
    image = _lookup(refs[0], image_ids, "annotations", "image_id", "images", bad)
    category = _lookup(refs[1], category_ids, "annotations", "category_id", "categories", bad)
    boxes = _boxes(refs[2], bad)
    area = _areas(anns, boxes, bad)
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
    return GroundTruth(uri, "coco", [str(n) for n in file_names], [str(n) for n in names], image, category,
                       boxes, area, crowd, np.zeros(len(anns), dtype=bool))


def _fields(items: list, key: str, names: tuple[str, ...], bad) -> list[list]:
    """The values of ``names`` in every item of ``items``, one list per name."""
    out: list[list] = [[] for _ in names]
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise bad(f"{key}[{index}]: expected an object, got {json.dumps(item)[:60]}")
        for column, name in zip(out, names, strict=True):
            if name not in item:
                raise bad(f"{key}[{index}]: no {name!r}")
            column.append(item[name])
    return out


def _unique(values: list, key: str, name: str, bad) -> None:
    seen: dict = {}
    for index, value in enumerate(values):
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise bad(f"{key}[{index}].{name}: expected a number or a string, got {json.dumps(value)[:40]}")
        if value in seen:
            raise bad(f"{key}[{seen[value]}] and {key}[{index}] have the same {name} {value!r}")
        seen[value] = index


def _lookup(refs: list, ids: list, key: str, name: str, target: str, bad) -> np.ndarray:
    """Positions in ``ids`` of ``refs``; an unknown reference names the annotation."""
    position = {value: index for index, value in enumerate(ids)}
    try:
        return np.fromiter((position[r] for r in refs), dtype=np.int64, count=len(refs))
    except (KeyError, TypeError):
        index = next(i for i, r in enumerate(refs) if not _hashable_in(r, position))
        raise bad(f"{key}[{index}].{name} {refs[index]!r} is not an id of {target}") from None


def _hashable_in(value, mapping: dict) -> bool:
    try:
        return value in mapping
    except TypeError:
        return False


def _boxes(raw: list, bad) -> np.ndarray:
    """``[x, y, w, h]`` per annotation as a float array; a malformed one names its annotation."""
    try:
        boxes = np.array(raw, dtype=np.float64).reshape(len(raw), 4)
        ok = np.isfinite(boxes).all(axis=1) & (boxes[:, 2:] >= 0).all(axis=1)
    except (ValueError, TypeError):  # ragged or not numbers: find the first bad one
        boxes, ok = np.zeros((len(raw), 4)), np.array([_box_ok(b) for b in raw], dtype=bool)
    if not ok.all():
        index = int(np.flatnonzero(~ok)[0])
        raise bad(f"annotations[{index}].bbox: expected [x, y, width, height] with width, height >= 0, "
                  f"got {json.dumps(raw[index])[:80]}")
    return boxes


def _box_ok(box) -> bool:
    try:
        values = np.array(box, dtype=np.float64)
    except (ValueError, TypeError):
        return False
    return values.shape == (4,) and bool(np.isfinite(values).all()) and bool((values[2:] >= 0).all())


def _areas(anns: list[dict], boxes: np.ndarray, bad) -> np.ndarray:
    """COCO's ``area`` of each annotation (what its area ranges use), else the box's."""
    area = boxes[:, 2] * boxes[:, 3]
    for index, ann in enumerate(anns):
        if "area" in ann:
            value = ann["area"]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise bad(f"annotations[{index}].area: expected a number, got {json.dumps(value)[:40]}")
            area[index] = value
    return area


# --- Pascal VOC ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _VocFile:
    file_name: str
    names: list[str]
    difficult: list[bool]
    boxes: list[tuple[float, float, float, float]]  # xmin, ymin, xmax, ymax


def read_voc(loc: Location, paths: list[str] | None = None) -> GroundTruth:
    """Every ``*.xml`` under ``loc`` (recursively), or ``paths``: one annotated image per file."""
    uri = loc.uri(loc.path)
    if paths is None:
        paths = list_images(loc, ("xml",), option=OPTION)
    if not paths:
        raise AnnotationError(f"{OPTION}: no .xml files under {uri} (expected a COCO JSON file or a "
                              "folder of Pascal VOC XML files)")
    with ThreadPoolExecutor(min(READ_THREADS, len(paths))) as pool:
        files = list(pool.map(lambda p: _parse_voc(loc, p), paths))
    return _voc_truth(uri, files)


def _parse_voc(loc: Location, path: str) -> _VocFile:
    uri = loc.uri(path)
    try:
        root = ET.fromstring(_read(loc, path))
    except ET.ParseError as exc:
        raise AnnotationError(f"{OPTION}: {uri}: not XML: {exc}") from None
    if root.tag != "annotation":
        raise AnnotationError(f"{OPTION}: {uri}: not a Pascal VOC file: the root element is <{root.tag}>, "
                              "expected <annotation>")
    file_name = (root.findtext("filename") or "").strip()
    if not file_name:
        raise AnnotationError(f"{OPTION}: {uri}: no <filename> (the image these objects are in)")
    names, difficult, boxes = [], [], []
    for number, obj in enumerate(root.findall("object"), start=1):
        where = f"{OPTION}: {uri}: <object> {number}"
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise AnnotationError(f"{where}: no <name>")
        names.append(name)
        difficult.append(_int(obj.findtext("difficult"), f"{where} <difficult>") == 1)
        boxes.append(_bndbox(obj.find("bndbox"), where))
    return _VocFile(file_name, names, difficult, boxes)


def _int(text: str | None, where: str) -> int:
    try:
        return int(float(text)) if text and text.strip() else 0
    except ValueError:
        raise AnnotationError(f"{where}: {text!r} is not a number") from None


def _bndbox(box: ET.Element | None, where: str) -> tuple[float, float, float, float]:
    if box is None:
        raise AnnotationError(f"{where}: no <bndbox>")
    values = []
    for tag in ("xmin", "ymin", "xmax", "ymax"):
        text = box.findtext(tag)
        try:
            values.append(float(text))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise AnnotationError(f"{where} <bndbox>: <{tag}> is {text!r}, not a number") from None
    xmin, ymin, xmax, ymax = values
    if xmax < xmin or ymax < ymin:
        raise AnnotationError(f"{where} <bndbox>: xmax/ymax ({xmax:g}, {ymax:g}) below xmin/ymin "
                              f"({xmin:g}, {ymin:g})")
    return xmin, ymin, xmax, ymax


def _voc_truth(uri: str, files: Iterable[_VocFile]) -> GroundTruth:
    files = list(files)
    categories = sorted({n for f in files for n in f.names})
    index = {name: i for i, name in enumerate(categories)}
    counts = [len(f.names) for f in files]
    corners = np.array([b for f in files for b in f.boxes], dtype=np.float64).reshape(-1, 4)
    boxes = np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1)
    return GroundTruth(
        source=uri, format="voc", file_names=[f.file_name for f in files], categories=categories,
        image=np.repeat(np.arange(len(files), dtype=np.int64), counts),
        category=np.array([index[n] for f in files for n in f.names], dtype=np.int64),
        boxes=boxes, area=boxes[:, 2] * boxes[:, 3], crowd=np.zeros(len(boxes), dtype=bool),
        difficult=np.array([d for f in files for d in f.difficult], dtype=bool),
    )


def base_name(name: str) -> str:
    """The last path component of a file name or URI (what results and annotations are matched by)."""
    return posixpath.basename(name.rstrip("/"))
