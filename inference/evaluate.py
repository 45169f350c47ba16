"""``detectionjob evaluate``: COCO-style box AP of a job's results against ground truth.

Ours are the reading (:mod:`inference.annotations`, :mod:`inference.evaluate_results`), the
matching of result rows to annotated images (by file name) and of label names to categories (by
name, :mod:`inference.evaluate_labels`), and the report (:mod:`inference.evaluate_report`). The
metric is pycocotools' ``COCOeval`` (bbox; IoU .50:.05:.95, 101 recall points, maxDets 1/10/100,
COCO's area ranges), its numbers named as torchmetrics' ``MeanAveragePrecision`` names them.
"""

from __future__ import annotations

import contextlib
import io
import json
import posixpath
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from inference.annotations import GroundTruth, base_name, read_annotations
from inference.evaluate_labels import label_lookup, read_label_map
from inference.evaluate_report import pr_curves_png
from inference.evaluate_results import Results, folder, read_results, score_threshold
from inference.uris import Location, resolve
from inference.writer import publish

EVALUATION_NAME = "_evaluation.json"
EVALUATION_DIR = "_evaluation"
PR_CURVES_NAME = "pr_curves.png"
MAX_LISTED = 10
#: Above this score threshold the results lack detections that AP counts (COCO's and torchvision's
#: detectors keep boxes down to 0.05 for evaluation).
HIGH_THRESHOLD = 0.05
#: ``COCOeval.stats`` in order, as torchmetrics names them.
STATS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large",
         "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")


class EvaluateError(ValueError):
    """Results and annotations that cannot be evaluated together."""


@dataclass(frozen=True)
class Evaluation:
    """A finished evaluation: the report and the files it is written to (not written yet)."""

    report: dict
    png: bytes
    out: Location
    json_path: str
    png_path: str
    warnings: list[str]

    def text(self) -> str:
        return json.dumps(self.report, indent=2, sort_keys=True)


class _Eval(COCOeval):
    """COCOeval where a VOC ``difficult`` object is ignored like a COCO crowd region (a detection
    matched to it counts neither way, and any number may match it) but overlaps by plain IoU."""

    def computeIoU(self, imgId, catId):  # COCOeval's names
        ious = super().computeIoU(imgId, catId)  # difficult objects are not crowds yet: plain IoU
        for gt in self._gts[imgId, catId]:
            if gt.get("difficult"):  # evaluate() runs every computeIoU before any evaluateImg
                gt["iscrowd"] = gt["ignore"] = 1
        return ious


def evaluate(results_uri: str, annotations_uri: str, label_map_uri: str | None = None,
             output_uri: str | None = None) -> Evaluation:
    """Read, match and evaluate; nothing is written (:func:`write` does that)."""
    results = resolve(results_uri, "--results")
    truth = read_annotations(resolve(annotations_uri, "--annotations"))
    label_map = read_label_map(resolve(label_map_uri, "--label-map")) if label_map_uri else None
    lookup = label_lookup(truth.categories, label_map, label_map_uri or "--label-map")
    out, json_path, png_path = output_paths(results, output_uri)
    rows = read_results(results)
    image = match_images(truth, rows)
    detections, left_out = detection_array(rows, image, lookup)
    cocoeval = run_cocoeval(truth, detections)
    threshold = score_threshold(results)
    report = {
        **metrics(cocoeval, truth),
        **coverage(truth, rows, image),
        "detections": len(detections),
        "detections_left_out": {"count": int(sum(left_out.values())), "per_class": left_out},
        "renamed_labels": {label: truth.categories[i] for label, i in lookup.items()
                           if label != truth.categories[i]},
        "results": results_uri, "annotations": annotations_uri, "annotation_format": truth.format,
        "label_map": label_map_uri, "score_threshold": threshold,
        "evaluation": out.uri(json_path), "pr_curves": out.uri(png_path),
    }
    png = pr_curves_png(curves(cocoeval, truth), cocoeval.params.recThrs,
                        f"{base_name(results.path) or results_uri} vs {base_name(truth.source)}")
    return Evaluation(report, png, out, json_path, png_path, threshold_warning(threshold))


def output_paths(results: Location, output: str | None) -> tuple[Location, str, str]:
    """Where the report and the PR curves go: beside the results, in ``--output`` (a folder), or
    at ``--output`` (a ``.json`` file, the curves in the folder of its name without ``.json``)."""
    out = resolve(output, "--output") if output else folder(results)
    if output and out.path.lower().endswith(".json"):
        return out, out.path, posixpath.join(out.path[:-len(".json")], PR_CURVES_NAME)
    return out, out.join(EVALUATION_NAME), out.join(EVALUATION_DIR, PR_CURVES_NAME)


def write(evaluation: Evaluation) -> None:
    """Publish the PR curves, then the report (each whole or absent)."""
    out = evaluation.out
    try:
        publish(out, evaluation.png_path, evaluation.png)
        publish(out, evaluation.json_path, (evaluation.text() + "\n").encode())
    except OSError as exc:
        raise EvaluateError(f"--output: {out.uri(out.path)}: not writable: {exc}") from None


def threshold_warning(threshold: float | None) -> list[str]:
    if threshold is None or threshold <= HIGH_THRESHOLD:
        return []
    return [f"warning: the results were written with --score-threshold {threshold:g} (_summary.json): "
            f"AP is understated: detections under {threshold:g} were never written"]


# --- matching ------------------------------------------------------------------------------------


def match_images(truth: GroundTruth, rows: Results) -> np.ndarray:
    """Per result row, the index of the annotated image with its file name, or -1."""
    names = [base_name(n) for n in truth.file_names]
    _unique_annotated(truth, names)
    image = pc.index_in(rows.names, value_set=pa.array(names, pa.string())).fill_null(-1)
    image = image.to_numpy(zero_copy_only=False).astype(np.int64)
    if not (image >= 0).any():
        raise _nothing_in_common(rows, names)
    _unique_results(rows, image, names)
    return image


def _nothing_in_common(rows: Results, names: list[str]) -> EvaluateError:
    ours = f"e.g. {base_name(rows.paths[0].as_py())!r}" if len(rows.paths) else "no rows"
    theirs = f"e.g. {names[0]!r}" if names else "no images"
    return EvaluateError(f"--results and --annotations have no image in common (matched by file name, the "
                         f"last path component): the results have {ours}, the annotations {theirs}")


def _unique_annotated(truth: GroundTruth, names: list[str]) -> None:
    counts = pc.value_counts(pa.array(names, pa.string()))
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated):
        name = repeated.field("values")[0].as_py()
        same = [truth.file_names[i] for i, n in enumerate(names) if n == name][:2]
        raise EvaluateError(f"--annotations: {truth.source}: two annotated images have the file name "
                            f"{name!r} ({same[0]!r}, {same[1]!r}); results are matched to annotations "
                            "by file name, so names must be unique")


def _unique_results(rows: Results, image: np.ndarray, names: list[str]) -> None:
    counts = np.bincount(image[image >= 0], minlength=len(names))
    if (counts > 1).any():
        at = int(np.flatnonzero(counts > 1)[0])
        paths = [rows.paths[int(i)].as_py() for i in np.flatnonzero(image == at)[:2]]
        raise EvaluateError(f"--results: two result rows have the file name {names[at]!r} ({paths[0]}, "
                            f"{paths[1]}); results are matched to annotations by file name, so an "
                            "annotated image's name must occur once")


def detection_array(rows: Results, image: np.ndarray, lookup: dict[str, int]
                    ) -> tuple[np.ndarray, dict[str, int]]:
    """COCO result rows ``[image id, x, y, w, h, score, category id]`` (ids 1-based) of the
    annotated, detected images; and the left-out detections' counts by label (unknown classes)."""
    keep = ((image >= 0) & ~rows.failed)[rows.row]
    labels = rows.labels.filter(pa.array(keep))
    keys = pa.array(list(lookup), pa.string())
    found = pc.index_in(labels, value_set=keys).fill_null(-1).to_numpy(zero_copy_only=False)
    known = found >= 0
    left = pc.value_counts(labels.filter(pa.array(~known)).fill_null("None"))
    left_out = dict(sorted(zip(left.field("values").to_pylist(), left.field("counts").to_pylist(),
                               strict=True),
                           key=lambda kv: (-kv[1], kv[0])))
    category = np.array(list(lookup.values()), dtype=np.int64)[found[known]]
    boxes = rows.boxes[keep][known]
    size = np.maximum(boxes[:, 2:] - boxes[:, :2], 0.0)
    array = np.column_stack([image[rows.row[keep][known]] + 1, boxes[:, :2], size,
                             rows.scores[keep][known], category + 1]).astype(np.float64)
    return array.reshape(-1, 7), left_out


# --- COCOeval ------------------------------------------------------------------------------------


def coco_ground_truth(truth: GroundTruth) -> COCO:
    """The ground truth as a pycocotools dataset; images, categories and objects numbered from 1."""
    columns = zip(truth.image.tolist(), truth.category.tolist(), truth.boxes.tolist(), truth.area.tolist(),
                  truth.crowd.tolist(), truth.difficult.tolist(), strict=True)
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i + 1, "file_name": n} for i, n in enumerate(truth.file_names)],
        "categories": [{"id": k + 1, "name": n} for k, n in enumerate(truth.categories)],
        "annotations": [{"id": j + 1, "image_id": i + 1, "category_id": k + 1, "bbox": box, "area": area,
                         "iscrowd": int(crowd), "difficult": difficult}
                        for j, (i, k, box, area, crowd, difficult) in enumerate(columns)],
    }
    coco.createIndex()
    return coco


def run_cocoeval(truth: GroundTruth, detections: np.ndarray) -> COCOeval:
    """COCOeval (bbox) evaluated, accumulated and summarized; its printing kept off stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_ground_truth(truth)
        if len(detections):
            dt = gt.loadRes(detections)
        else:  # loadRes cannot take an empty list: no detections at all is an empty result set
            dt = COCO()
            dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"],
                          "annotations": []}
            dt.createIndex()
        cocoeval = _Eval(gt, dt, iouType="bbox")
        cocoeval.evaluate()
        cocoeval.accumulate()
        cocoeval.summarize()
    return cocoeval


def _mean(precision: np.ndarray) -> float:
    """COCOeval's summary of a precision slice: the mean of its defined entries, -1 if none."""
    defined = precision[precision > -1]
    return float(defined.mean()) if defined.size else -1.0


def metrics(cocoeval: COCOeval, truth: GroundTruth) -> dict:
    """The 12 COCO numbers and, per category, AP, AP at IoU 0.5 and its (not ignored) objects."""
    precision = cocoeval.eval["precision"]  # [IoU, recall, category, area range, maxDets]
    objects = truth.objects()
    per_class = {
        name: {"ap": round(_mean(precision[:, :, k, 0, -1]), 6),
               "ap_50": round(_mean(precision[0, :, k, 0, -1]), 6), "objects": int(objects[k])}
        for k, name in enumerate(truth.categories)
    }
    return {**{key: round(float(v), 6) for key, v in zip(STATS, cocoeval.stats, strict=True)},
            "per_class": per_class, "objects": int(objects.sum()),
            "ignored_objects": {"crowd": int(truth.crowd.sum()), "difficult": int(truth.difficult.sum())}}


def curves(cocoeval: COCOeval, truth: GroundTruth) -> dict[str, np.ndarray]:
    """Precision at COCOeval's 101 recall points (IoU 0.5, all areas, 100 detections) per category
    that has objects."""
    precision = cocoeval.eval["precision"][0, :, :, 0, -1]
    objects = truth.objects()
    return {name: precision[:, k] for k, name in enumerate(truth.categories) if objects[k]}


def coverage(truth: GroundTruth, rows: Results, image: np.ndarray) -> dict:
    """How many annotated images were detected, and which were not (no row, or an error row)."""
    detected = np.zeros(len(truth.file_names), dtype=bool)
    detected[image[(image >= 0) & ~rows.failed]] = True
    errored = np.zeros_like(detected)
    errored[image[(image >= 0) & rows.failed]] = True
    missing = sorted(truth.file_names[i] for i in np.flatnonzero(~detected))
    return {
        "images": len(truth.file_names),
        "images_with_results": int(detected.sum()),
        "images_without_results": {"count": len(missing), "no_row": int((~detected & ~errored).sum()),
                                   "error_row": int(errored.sum()), "first": missing[:MAX_LISTED]},
        "result_rows_not_annotated": int((image < 0).sum()),
    }
