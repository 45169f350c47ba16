"""``detectionjob evaluate`` against pycocotools run directly on the same ground truth and detections.

The scenes are synthetic: objects in separate 160x160 cells of a 640x480 image, detections that
miss some, shift others, add duplicates, wrong classes, false positives in empty cells, classes the
annotations lack, a COCO crowd region and a VOC ``difficult`` object. The results are written as
the job writes them (Parquet with inference.output_schema.OUTPUT_SCHEMA) and nothing runs Ray.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from inference.cli import main
from inference.evaluate_report import PALETTE
from inference.output_schema import OUTPUT_SCHEMA

TOLERANCE = 1e-4
STATS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large",
         "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")
CELL = 160
CELLS = [(c * CELL, r * CELL) for r in range(3) for c in range(4)]  # 12 cells of a 640x480 image
SIZES = (16, 24, 48, 80, 120, 150)  # small (< 32^2), medium and large objects
LEFT_OUT = "hair drier"  # a model class no annotation has


@dataclass
class Obj:
    name: str
    box: list[int]  # x1, y1, x2, y2
    crowd: bool = False
    difficult: bool = False


@dataclass
class Det:
    label: str  # the model's label name
    box: list[int]
    score: float


@dataclass
class Scene:
    images: dict[str, list[Obj]]  # file name -> objects
    dets: dict[str, list[Det]] = field(default_factory=dict)


def _f32(x: float) -> float:
    return float(np.float32(x))


def _box_in(rng, cell: tuple[int, int], size: int) -> list[int]:
    w, h = (max(4, int(size * rng.uniform(0.7, 1.0))) for _ in range(2))
    x, y = cell[0] + int(rng.integers(0, CELL - w + 1)), cell[1] + int(rng.integers(0, CELL - h + 1))
    return [x, y, x + w, y + h]


def make_scene(names: list[str], model_names: dict[str, list[str]], seed: int = 0, n: int = 8,
               crowd: bool = False, difficult: bool = False) -> Scene:
    """Ground truth of ``n`` images over ``names``, and perturbed detections labelled with the model's
    names (``model_names[name]``, default the name itself)."""
    rng = np.random.default_rng(seed)
    scene = Scene({})

    def label(name: str) -> str:
        options = model_names.get(name, [name])
        return options[int(rng.integers(len(options)))]

    for i in range(n):
        file_name = f"img_{i:03d}.jpg"
        cells = [CELLS[c] for c in rng.permutation(len(CELLS))]
        count = int(rng.integers(2, 6))
        objects = [Obj(names[int(rng.integers(len(names)))], _box_in(rng, cell, int(rng.choice(SIZES))))
                   for cell in cells[:count]]
        free = cells[count:]
        dets = []
        if difficult and i == 1:  # 100x100: a detection 1 px off overlaps it by more than 0.95
            x, y = objects[0].box[:2]
            objects[0] = Obj(objects[0].name, [x, y, x + 100, y + 100], difficult=True)
        if crowd and i == 2:
            x, y = free.pop()
            objects.append(Obj("person", [x + 5, y + 5, x + CELL - 5, y + CELL - 5], crowd=True))
            dets += [Det(label("person"), _box_in(rng, (x + 5, y + 5), 60), _f32(rng.uniform(0.3, 1)))
                     for _ in range(3)]
        for obj in objects:
            dets += _detections(rng, obj, label, names)
        for cell in free[:int(rng.integers(1, 3))]:  # false positives where nothing is
            dets.append(Det(label(names[int(rng.integers(len(names)))]), _box_in(rng, cell, 60),
                            _f32(rng.uniform(0.2, 1))))
        dets.append(Det(LEFT_OUT, _box_in(rng, free[-1], 40), _f32(rng.uniform(0.2, 1))))
        scene.images[file_name] = objects
        scene.dets[file_name] = sorted(dets, key=lambda d: -d.score)
    return scene


def _detections(rng, obj: Obj, label, names: list[str]) -> list[Det]:
    if obj.crowd:
        return []
    x1, y1, x2, y2 = obj.box
    if obj.difficult:  # 1 px off: plain IoU (0.98) and COCO's crowd overlap (0.99) both > 0.95
        return [Det(label(obj.name), [x1 + 1, y1, x2 + 1, y2], 0.9)]
    if rng.random() < 0.2:  # missed
        return []
    out = []
    for score_scale in (1.0, 0.5) if rng.random() < 0.2 else (1.0,):  # sometimes a duplicate
        dx, dy = (int(round(rng.uniform(-0.15, 0.15) * s)) for s in (x2 - x1, y2 - y1))
        name = obj.name if rng.random() > 0.1 else names[int(rng.integers(len(names)))]  # wrong class
        score = _f32(rng.uniform(0.2, 1) * score_scale)
        out.append(Det(label(name), [x1 + dx, y1 + dy, x2 + dx, y2 + dy], score))
    return out


# --- writing ground truth and results as files ---------------------------------------------------


def coco_dict(scene: Scene, names: list[str], difficult_as_crowd: bool = True) -> dict:
    """The scene as a COCO instances dict, with ids that are neither contiguous nor from 1."""
    images = [{"id": 1000 + 7 * i, "file_name": f"val/{name}", "width": 640, "height": 480}
              for i, name in enumerate(scene.images)]
    categories = [{"id": 3 + 5 * k, "name": name} for k, name in enumerate(names)]
    cat_id = {c["name"]: c["id"] for c in categories}
    annotations = []
    for image, objects in zip(images, scene.images.values(), strict=True):
        for obj in objects:
            x1, y1, x2, y2 = obj.box
            annotations.append({"id": 500 + len(annotations), "image_id": image["id"],
                                "category_id": cat_id[obj.name], "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "area": (x2 - x1) * (y2 - y1),
                                "iscrowd": int(obj.crowd or (difficult_as_crowd and obj.difficult))})
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco(path: Path, scene: Scene, names: list[str]) -> dict:
    data = coco_dict(scene, names)
    path.write_text(json.dumps(data))
    return data


def voc_xml(file_name: str, objects: list[Obj]) -> str:
    parts = [f"<annotation><folder>VOC2012</folder><filename>{file_name}</filename>"
             "<size><width>640</width><height>480</height><depth>3</depth></size>"]
    for obj in objects:
        assert not obj.crowd, "VOC has no crowd regions"
        x1, y1, x2, y2 = obj.box
        parts.append(f"<object><name>{obj.name}</name><pose>Unspecified</pose><truncated>0</truncated>"
                     f"<difficult>{int(obj.difficult)}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                     f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>"


def write_voc(folder: Path, scene: Scene) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, objects in scene.images.items():
        (folder / (name.rsplit(".", 1)[0] + ".xml")).write_text(voc_xml(name, objects))
    return folder


def result_rows(scene: Scene, missing: tuple[str, ...] = (), errors: tuple[str, ...] = (),
                extra: bool = True) -> list[dict]:
    """Result rows as the job writes them: no row for ``missing``, an error row for ``errors``, and a
    row of an image the annotations do not have."""
    rows = []
    dets = dict(scene.dets)
    if extra:
        dets["extra.jpg"] = [Det("person", [10, 10, 50, 50], 0.9)]
    for name, found in dets.items():
        if name in missing:
            continue
        row = {"path": f"/data/VOC2012/JPEGImages/{name}", "width": 640, "height": 480, "model": "synthetic",
               "boxes": [d.box for d in found], "scores": [d.score for d in found],
               "labels": [0] * len(found), "label_names": [d.label for d in found], "error": None}
        if name in errors:
            row.update(width=0, height=0, boxes=None, scores=None, labels=None, label_names=None,
                       error="OSError: truncated file")
        rows.append(row)
    return rows


def write_results(folder: Path, rows: list[dict], threshold: float | None = 0.0) -> Path:
    """Two part files (as two shards) and, unless ``threshold`` is None, a ``_summary.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA)
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), folder / "part-00000000000000a1.parquet")
    pq.write_table(table.slice(half), folder / "part-00000000000000b2.parquet")
    if threshold is not None:
        (folder / "_summary.json").write_text(json.dumps({"images": len(rows), "score_threshold": threshold}))
    return folder


# --- pycocotools, directly -----------------------------------------------------------------------


def quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def reference(gt_dict: dict, scene: Scene, to_annotation: dict[str, str], evaluated: set[str]) -> dict:
    """The 12 COCOeval numbers and torchmetrics-style per-class AP (COCOeval with ``catIds=[c]``)."""
    gt = COCO()
    gt.dataset = copy.deepcopy(gt_dict)
    quiet(gt.createIndex)
    image_id = {im["file_name"].rsplit("/", 1)[-1]: im["id"] for im in gt_dict["images"]}
    cat_id = {c["name"]: c["id"] for c in gt_dict["categories"]}
    dets = [{"image_id": image_id[name], "category_id": cat_id[to_annotation.get(d.label, d.label)],
             "bbox": [d.box[0], d.box[1], d.box[2] - d.box[0], d.box[3] - d.box[1]], "score": d.score}
            for name, found in scene.dets.items() if name in evaluated
            for d in found if to_annotation.get(d.label, d.label) in cat_id]
    dt = quiet(gt.loadRes, dets)

    def run(cat_ids=None) -> np.ndarray:
        e = COCOeval(gt, dt, "bbox")
        if cat_ids is not None:
            e.params.catIds = cat_ids
        quiet(e.evaluate)
        quiet(e.accumulate)
        quiet(e.summarize)
        return e.stats

    out = dict(zip(STATS, run(), strict=True))
    out["per_class"] = {c["name"]: dict(zip(("ap", "ap_50"), run([c["id"]])[:2], strict=True))
                        for c in gt_dict["categories"]}
    return out


def differences(ours: dict, theirs: dict) -> dict[str, float]:
    """Max absolute differences: each of the 12 numbers, and per-class AP and AP50."""
    out = {key: abs(ours[key] - theirs[key]) for key in STATS}
    out["per_class"] = max(abs(ours["per_class"][name][k] - theirs["per_class"][name][k])
                           for name in theirs["per_class"] for k in ("ap", "ap_50"))
    return out


def run_cli(args: list[str], capsys, tty: bool = False, monkeypatch=None) -> tuple[int, str, str]:
    if tty:
        stream = io.StringIO()
        stream.isatty = lambda: True  # type: ignore[method-assign]
        monkeypatch.setattr(sys, "stdout", stream)
        code = main(args)
        monkeypatch.undo()
        return code, stream.getvalue(), capsys.readouterr().err
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- the scenes of the tests ---------------------------------------------------------------------

COCO_NAMES = ["person", "dog", "sofa", "vehicle"]  # sofa: the built-in VOC name; vehicle: --label-map
COCO_MODEL = {"sofa": ["couch"], "vehicle": ["car", "truck"]}
VOC_NAMES = ["aeroplane", "cat", "person", "plant", "tvmonitor"]  # plant: --label-map
VOC_MODEL = {"aeroplane": ["airplane"], "plant": ["potted plant"], "tvmonitor": ["tv"]}


def inverse(model: dict[str, list[str]]) -> dict[str, str]:
    return {label: name for name, labels in model.items() for label in labels}


@pytest.fixture
def coco_case(tmp_path) -> tuple[Scene, dict, Path, Path, Path]:
    scene = make_scene(COCO_NAMES, COCO_MODEL, seed=3, n=10, crowd=True)
    gt = write_coco(tmp_path / "instances.json", scene, COCO_NAMES)
    label_map = tmp_path / "labels.yaml"
    label_map.write_text("# annotation name: the model's label names\nvehicle: [car, truck]\n")
    results = write_results(tmp_path / "results", result_rows(scene, missing=("img_004.jpg",),
                                                             errors=("img_005.jpg",)))
    return scene, gt, tmp_path / "instances.json", label_map, results


# --- agreement with pycocotools ------------------------------------------------------------------


def test_coco_json_agrees_with_pycocotools(coco_case, capsys):
    scene, gt, annotations, label_map, results = coco_case
    code, out, err = run_cli(["evaluate", "--results", str(results), "--annotations", str(annotations),
                              "--label-map", str(label_map)], capsys)
    assert code == 0, err
    report = json.loads(out)
    evaluated = set(scene.images) - {"img_004.jpg", "img_005.jpg"}
    expected = reference(gt, scene, inverse(COCO_MODEL), evaluated)
    diff = differences(report, expected)
    assert max(diff.values()) < TOLERANCE, diff
    assert 0.05 < report["map"] < 0.95 and report["map_50"] > report["map_75"]  # a scene worth testing
    assert all(report[k] >= 0 for k in ("map_small", "map_medium", "map_large"))  # every area range
    objects = {name: sum(o.name == name and not o.crowd for objs in scene.images.values() for o in objs)
               for name in COCO_NAMES}
    assert {n: c["objects"] for n, c in report["per_class"].items()} == objects
    assert report["ignored_objects"] == {"crowd": 1, "difficult": 0}
    left_out = sum(d.label == LEFT_OUT for name in evaluated for d in scene.dets[name])
    assert report["detections_left_out"] == {"count": left_out, "per_class": {LEFT_OUT: left_out}}
    assert report["renamed_labels"] == {"couch": "sofa", "car": "vehicle", "truck": "vehicle"}
    assert report["images_without_results"] == {"count": 2, "no_row": 1, "error_row": 1,
                                                 "first": ["val/img_004.jpg", "val/img_005.jpg"]}
    assert report["result_rows_not_annotated"] == 1 and report["images_with_results"] == 8
    assert report["annotation_format"] == "coco" and report["score_threshold"] == 0.0
    assert json.loads((results / "_evaluation.json").read_text()) == report


def test_voc_folder_agrees_with_pycocotools(tmp_path, capsys):
    scene = make_scene(VOC_NAMES, VOC_MODEL, seed=5, n=9, difficult=True)
    voc = write_voc(tmp_path / "Annotations", scene)
    label_map = tmp_path / "labels.json"
    label_map.write_text(json.dumps({"plant": "potted plant"}))
    results = write_results(tmp_path / "results", result_rows(scene))
    code, out, err = run_cli(["evaluate", "--results", str(results), "--annotations", str(voc),
                              "--label-map", str(label_map)], capsys)
    assert code == 0, err
    report = json.loads(out)
    # pycocotools has no "difficult": the reference marks it a crowd region (the detection on it is
    # 1 px off, so both overlaps exceed every IoU threshold and the matching is the same)
    expected = reference(coco_dict(scene, VOC_NAMES), scene, inverse(VOC_MODEL), set(scene.images))
    diff = differences(report, expected)
    assert max(diff.values()) < TOLERANCE, diff
    assert 0.05 < report["map"] < 0.95
    assert report["annotation_format"] == "voc" and report["ignored_objects"] == {"crowd": 0, "difficult": 1}
    assert report["renamed_labels"] == {"airplane": "aeroplane", "tv": "tvmonitor", "potted plant": "plant"}


def test_coco_json_and_voc_folder_give_the_same_numbers(tmp_path, capsys):
    scene = make_scene(VOC_NAMES, VOC_MODEL, seed=11, n=8, difficult=True)
    (tmp_path / "labels.json").write_text(json.dumps({"plant": ["potted plant"]}))
    results = write_results(tmp_path / "results", result_rows(scene, missing=("img_002.jpg",)))
    write_coco(tmp_path / "instances.json", scene, VOC_NAMES)  # the difficult object: a crowd region
    reports = []
    for source in (tmp_path / "instances.json", write_voc(tmp_path / "voc", scene)):
        code, out, err = run_cli(["evaluate", "--results", str(results), "--annotations", str(source),
                                  "--label-map", str(tmp_path / "labels.json")], capsys)
        assert code == 0, err
        reports.append(json.loads(out))
    coco, voc = reports
    assert {k: coco[k] for k in STATS} == {k: voc[k] for k in STATS}
    assert coco["per_class"] == voc["per_class"] and coco["detections"] == voc["detections"]
    assert coco["map"] > 0


def test_difficult_objects_count_neither_way(tmp_path, capsys):
    scene = make_scene(VOC_NAMES, VOC_MODEL, seed=5, n=9, difficult=True)
    hard = scene.images["img_001.jpg"][0]
    other, plain = next((name, o) for name, objects in scene.images.items() for o in objects
                        if o.name == hard.name and not o.difficult)
    voc = write_voc(tmp_path / "voc", scene)
    (tmp_path / "labels.json").write_text(json.dumps({"plant": "potted plant"}))

    def ap(dets: dict[str, list[Det]], folder: str) -> dict:
        results = write_results(tmp_path / folder, result_rows(Scene(scene.images, dets)))
        code, out, err = run_cli(["evaluate", "--results", str(results), "--annotations", str(voc),
                                  "--label-map", str(tmp_path / "labels.json")], capsys)
        assert code == 0, err
        return json.loads(out)["per_class"][hard.name]

    label = VOC_MODEL.get(hard.name, [hard.name])[0]
    before = ap(scene.dets, "before")
    more = [Det(label, list(hard.box), 0.99), Det(label, [hard.box[0], hard.box[1] + 1, *hard.box[2:]], 0.98)]
    on_difficult = ap({**scene.dets, "img_001.jpg": scene.dets["img_001.jpg"] + more}, "difficult")
    dupes = [Det(label, list(plain.box), 0.99), Det(label, list(plain.box), 0.98)]
    on_plain = ap({**scene.dets, other: scene.dets[other] + dupes}, "plain")
    assert on_difficult == before  # two more detections on a difficult object: neither TP nor FP
    assert on_plain["ap_50"] != before["ap_50"]  # the same on a plain object changes the numbers
    assert on_plain["objects"] == before["objects"]


def test_no_detections_at_all_is_zero_ap(tmp_path, capsys):
    scene = make_scene(COCO_NAMES, COCO_MODEL, seed=1, n=3)
    write_coco(tmp_path / "instances.json", scene, COCO_NAMES)
    nothing = Scene(scene.images, {name: [] for name in scene.images})
    results = write_results(tmp_path / "results", result_rows(nothing, extra=False))
    code, out, err = run_cli(["evaluate", "--results", str(results), "--annotations",
                              str(tmp_path / "instances.json")], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["map"] == 0 and report["detections"] == 0
    assert all(c["ap"] in (0, -1) for c in report["per_class"].values())


# --- output: JSON, table, files, warning ---------------------------------------------------------


def test_terminal_gets_a_table_sorted_by_ap_and_a_pipe_gets_json(coco_case, capsys, monkeypatch):
    _, _, annotations, label_map, results = coco_case
    args = ["evaluate", "--results", str(results), "--annotations", str(annotations),
            "--label-map", str(label_map)]
    code, table, _ = run_cli(args, capsys, tty=True, monkeypatch=monkeypatch)
    assert code == 0
    report = json.loads((results / "_evaluation.json").read_text())
    with pytest.raises(json.JSONDecodeError):
        json.loads(table)
    lines = table.splitlines()
    assert lines[0].startswith(f"mAP {report['map']:.3f}   AP50 {report['map_50']:.3f}")
    header = next(i for i, line in enumerate(lines) if line.startswith("class"))
    rows = [line.split() for line in lines[header + 1:header + 1 + len(report["per_class"])]]
    assert [r[0] for r in rows] == sorted(report["per_class"], key=lambda n: -report["per_class"][n]["ap"])
    for name, ap, ap_50, objects in rows:
        assert (ap, ap_50, int(objects)) == (f"{report['per_class'][name]['ap']:.3f}",
                                            f"{report['per_class'][name]['ap_50']:.3f}",
                                            report["per_class"][name]["objects"])
    assert ("annotated images without results, counted as detecting nothing: 2 (no row 1, error row 1): "
            "val/img_004.jpg, val/img_005.jpg") in table
    left_out = report["detections_left_out"]["count"]
    assert f"detections left out, their classes not annotated: {left_out} ({LEFT_OUT} {left_out})" in table
    assert str(results / "_evaluation" / "pr_curves.png") in table

    code, out, _ = run_cli(args, capsys)
    assert code == 0 and json.loads(out) == report


def test_pr_curves_png(coco_case, capsys):
    _, _, annotations, label_map, results = coco_case
    code, out, _ = run_cli(["evaluate", "--results", str(results), "--annotations", str(annotations),
                            "--label-map", str(label_map)], capsys)
    assert code == 0
    report = json.loads(out)
    png = results / "_evaluation" / "pr_curves.png"
    assert report["pr_curves"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG" and 600 <= image.width <= 2000 and 400 <= image.height <= 1500
        colors = {c for _, c in image.convert("RGB").getcolors(maxcolors=1 << 20)}
    drawn = sum(1 for c in report["per_class"].values() if c["objects"])  # one colour per class present
    assert drawn >= 3 and set(PALETTE[:drawn]) <= colors


@pytest.mark.parametrize("threshold, warned", [(0.5, True), (0.05, False), (None, False)])
def test_score_threshold_is_recorded_and_a_high_one_warned(tmp_path, capsys, threshold, warned):
    scene = make_scene(COCO_NAMES, COCO_MODEL, seed=2, n=3)
    write_coco(tmp_path / "instances.json", scene, COCO_NAMES)
    results = write_results(tmp_path / "results", result_rows(scene), threshold=threshold)
    code, out, err = run_cli(["evaluate", "--results", str(results), "--annotations",
                              str(tmp_path / "instances.json")], capsys)
    assert code == 0
    assert json.loads(out)["score_threshold"] == threshold
    if warned:
        assert err.count("\n") == 1 and err.startswith("detectionjob evaluate: warning:")
        assert "AP is understated: detections under 0.5 were never written" in err
    else:
        assert err == ""


def test_output_folder_or_json_file(coco_case, tmp_path, capsys):
    _, _, annotations, label_map, results = coco_case
    base = ["evaluate", "--results", str(results), "--annotations", str(annotations),
            "--label-map", str(label_map)]
    assert run_cli([*base, "--output", str(tmp_path / "eval")], capsys)[0] == 0
    assert (tmp_path / "eval" / "_evaluation.json").is_file()
    assert (tmp_path / "eval" / "_evaluation" / "pr_curves.png").is_file()
    code, out, _ = run_cli([*base, "--output", str(tmp_path / "runs" / "frcnn.json")], capsys)
    assert code == 0 and json.loads(out)["pr_curves"] == str(tmp_path / "runs" / "frcnn" / "pr_curves.png")
    assert json.loads((tmp_path / "runs" / "frcnn.json").read_text()) == json.loads(out)
    assert (tmp_path / "runs" / "frcnn" / "pr_curves.png").is_file()
    assert not (results / "_evaluation.json").exists()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["frcnn", "frcnn.json"]  # no temporaries


# --- bad input: one line, exit 2, nothing written ------------------------------------------------


def _case_not_json(tmp: Path, scene: Scene) -> list[str]:
    (tmp / "instances.json").write_text('{"images": [}')
    return ["--annotations", str(tmp / "instances.json")]


def _case_no_bbox(tmp: Path, scene: Scene) -> list[str]:
    data = coco_dict(scene, COCO_NAMES)
    del data["annotations"][1]["bbox"]
    (tmp / "instances.json").write_text(json.dumps(data))
    return ["--annotations", str(tmp / "instances.json")]


def _case_bad_bbox(tmp: Path, scene: Scene) -> list[str]:
    data = coco_dict(scene, COCO_NAMES)
    data["annotations"][2]["bbox"] = [1, 2, 3]
    (tmp / "instances.json").write_text(json.dumps(data))
    return ["--annotations", str(tmp / "instances.json")]


def _case_unknown_category(tmp: Path, scene: Scene) -> list[str]:
    data = coco_dict(scene, COCO_NAMES)
    data["annotations"][0]["category_id"] = 999
    (tmp / "instances.json").write_text(json.dumps(data))
    return ["--annotations", str(tmp / "instances.json")]


def _case_no_images_key(tmp: Path, scene: Scene) -> list[str]:
    (tmp / "instances.json").write_text(json.dumps({"annotations": [], "categories": []}))
    return ["--annotations", str(tmp / "instances.json")]


def _case_bad_xml(tmp: Path, scene: Scene) -> list[str]:
    voc = write_voc(tmp / "voc", scene)
    (voc / "img_001.xml").write_text("<annotation><filename>img_001.jpg</filename><object></annotation>")
    return ["--annotations", str(voc)]


def _case_xml_coordinate(tmp: Path, scene: Scene) -> list[str]:
    voc = write_voc(tmp / "voc", scene)
    (voc / "img_001.xml").write_text(voc_xml("img_001.jpg", scene.images["img_001.jpg"]).replace(
        "<xmin>", "<xmin>left", 1))
    return ["--annotations", str(voc)]


def _case_no_xml(tmp: Path, scene: Scene) -> list[str]:
    (tmp / "empty").mkdir()
    return ["--annotations", str(tmp / "empty")]


def _case_missing(tmp: Path, scene: Scene) -> list[str]:
    return ["--annotations", str(tmp / "nowhere.json")]


def _case_not_ours(tmp: Path, scene: Scene) -> list[str]:
    write_coco(tmp / "instances.json", scene, COCO_NAMES)
    (tmp / "other").mkdir()
    pq.write_table(pa.table({"path": ["a.jpg"], "boxes": [[[1.0, 2.0, 3.0, 4.0]]], "scores": [[0.5]]}),
                   tmp / "other" / "part-0.parquet")
    return ["--annotations", str(tmp / "instances.json"), "--results", str(tmp / "other")]


def _case_no_parts(tmp: Path, scene: Scene) -> list[str]:
    write_coco(tmp / "instances.json", scene, COCO_NAMES)
    (tmp / "nothing").mkdir()
    return ["--annotations", str(tmp / "instances.json"), "--results", str(tmp / "nothing")]


def _case_nothing_in_common(tmp: Path, scene: Scene) -> list[str]:
    data = coco_dict(scene, COCO_NAMES)
    for image in data["images"]:
        image["file_name"] = "2008_" + image["file_name"].rsplit("/", 1)[-1]
    (tmp / "instances.json").write_text(json.dumps(data))
    return ["--annotations", str(tmp / "instances.json")]


def _case_repeated_result(tmp: Path, scene: Scene) -> list[str]:
    write_coco(tmp / "instances.json", scene, COCO_NAMES)
    rows = result_rows(scene)
    rows.append({**rows[0], "path": "/elsewhere/img_000.jpg"})
    write_results(tmp / "twice", rows)
    return ["--annotations", str(tmp / "instances.json"), "--results", str(tmp / "twice")]


def _case_repeated_annotation(tmp: Path, scene: Scene) -> list[str]:
    data = coco_dict(scene, COCO_NAMES)
    data["images"][1]["file_name"] = "train/img_000.jpg"
    (tmp / "instances.json").write_text(json.dumps(data))
    return ["--annotations", str(tmp / "instances.json")]


def _case_label_map(tmp: Path, scene: Scene) -> list[str]:
    write_coco(tmp / "instances.json", scene, COCO_NAMES)
    (tmp / "map.yaml").write_text("nosuch: car\n")
    return ["--annotations", str(tmp / "instances.json"), "--label-map", str(tmp / "map.yaml")]


BAD_INPUTS = {
    "not JSON": (_case_not_json, ["instances.json", "not a COCO JSON file"]),
    "no bbox": (_case_no_bbox, ["instances.json", "annotations[1]: no 'bbox'"]),
    "bad bbox": (_case_bad_bbox, ["instances.json", "annotations[2].bbox", "[1, 2, 3]"]),
    "unknown category": (_case_unknown_category,
                         ["instances.json", "annotations[0].category_id 999 is not an id of categories"]),
    "no images list": (_case_no_images_key, ["instances.json", "no 'images' list"]),
    "bad XML": (_case_bad_xml, ["img_001.xml", "not XML", "mismatched tag"]),
    "XML coordinate": (_case_xml_coordinate, ["img_001.xml", "<object> 1 <bndbox>: <xmin>", "not a number"]),
    "no XML files": (_case_no_xml, ["no .xml files under", "empty"]),
    "missing annotations": (_case_missing, ["nowhere.json", "does not exist"]),
    "results not ours": (_case_not_ours, ["part-0.parquet", "is not a detectionjob result",
                                          "no column 'label_names'"]),
    "no parts": (_case_no_parts, ["--results", "no part-*.parquet files"]),
    "nothing in common": (_case_nothing_in_common, ["no image in common", "matched by file name",
                                                    "'img_000.jpg'", "'2008_img_000.jpg'"]),
    "repeated result name": (_case_repeated_result, ["two result rows have the file name 'img_000.jpg'",
                                                     "/elsewhere/img_000.jpg"]),
    "repeated annotated name": (_case_repeated_annotation, ["two annotated images have the file name "
                                                            "'img_000.jpg'", "train/img_000.jpg"]),
    "label map": (_case_label_map, ["--label-map", "map.yaml", "'nosuch' is not a category"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_line_and_writes_nothing(case, tmp_path, capsys):
    scene = make_scene(COCO_NAMES, COCO_MODEL, seed=7, n=4)
    results = write_results(tmp_path / "results", result_rows(scene))
    make, fragments = BAD_INPUTS[case]
    args = dict(zip(*[iter(["--results", str(results), *make(tmp_path, scene)])] * 2, strict=True))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, out, err = run_cli(["evaluate", *[x for kv in args.items() for x in kv]], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("detectionjob evaluate: error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_the_command_itself(coco_case, tmp_path):
    """``python -m inference evaluate`` as a user runs it: JSON alone on stdout, one line on error."""
    _, _, annotations, label_map, results = coco_case
    cmd = [sys.executable, "-m", "inference", "evaluate", "--results", str(results), "--annotations"]
    done = subprocess.run([*cmd, str(annotations), "--label-map", str(label_map)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads((results / "_evaluation.json").read_text())
    (tmp_path / "broken.json").write_text("[1, 2")
    bad = subprocess.run([*cmd, str(tmp_path / "broken.json")], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert bad.returncode == 2 and bad.stdout == "" and "Traceback" not in bad.stderr
    assert bad.stderr.count("\n") == 1 and "broken.json: not a COCO JSON file" in bad.stderr


# --- S3 ------------------------------------------------------------------------------------------


@pytest.mark.cluster
def test_annotations_and_results_on_s3(minio_s3, coco_case, tmp_path):
    """COCO JSON and VOC XML read from MinIO, results there too, the report written back."""
    scene, gt, annotations, label_map, results = coco_case
    fs, bucket = minio_s3.filesystem(), minio_s3.bucket
    uploads = {f"{bucket}/eval/instances.json": annotations.read_bytes(),
               f"{bucket}/eval/labels.yaml": label_map.read_bytes()}
    voc_scene = Scene({n: [o for o in objs if not o.crowd] for n, objs in scene.images.items()}, scene.dets)
    for name, objects in voc_scene.images.items():
        uploads[f"{bucket}/eval/voc/{name[:-4]}.xml"] = voc_xml(name, objects).encode()
    for part in results.glob("part-*.parquet"):
        uploads[f"{bucket}/eval/results/{part.name}"] = part.read_bytes()
    for key, data in uploads.items():
        with fs.open_output_stream(key) as f:
            f.write(data)
    done = []
    for source in ("instances.json", "voc"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["evaluate", "--results", f"s3://{bucket}/eval/results", "--annotations",
                         f"s3://{bucket}/eval/{source}", "--label-map",
                         f"s3://{bucket}/eval/labels.yaml"]) == 0
        done.append(json.loads(out.getvalue()))
    on_s3, voc = done
    evaluated = set(scene.images) - {"img_004.jpg", "img_005.jpg"}
    assert max(differences(on_s3, reference(gt, scene, inverse(COCO_MODEL), evaluated)).values()) < TOLERANCE
    assert voc["annotation_format"] == "voc" and voc["objects"] == on_s3["objects"]
    with fs.open_input_stream(f"{bucket}/eval/results/_evaluation.json") as f:
        assert json.loads(f.read()) == voc  # the last run's report, beside the results
    assert fs.get_file_info(f"{bucket}/eval/results/_evaluation/pr_curves.png").size > 1000
    assert not (results / "_evaluation.json").exists()  # the local copy was never evaluated
