"""``detectionjob run --evaluate-annotations`` (spec.evaluation on Kubernetes): the results are
scored as ``detectionjob evaluate`` scores them, right after detection; a wrong annotations URI
fails before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from jobtest import FAST_MODEL, detectionjob


def voc_folder(images: list[Path], folder: Path) -> Path:
    """A Pascal VOC annotation per image: two boxes (a person and a car) each."""
    folder.mkdir()
    for i, image in enumerate(images):
        objects = "".join(
            f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x}</xmin><ymin>20</ymin>"
            f"<xmax>{x + 90}</xmax><ymax>200</ymax></bndbox></object>"
            for name, x in (("person", 10 + i), ("car", 150)))
        (folder / f"{image.stem}.xml").write_text(
            f"<annotation><filename>{image.name}</filename><size><width>320</width><height>240</height>"
            f"<depth>3</depth></size>{objects}</annotation>")
    return folder


@pytest.mark.slow
def test_a_run_evaluates_its_results_as_evaluate_does(sample_dir, tmp_path, ray_tmpdir):
    src, out = tmp_path / "in", tmp_path / "out"
    shutil.copytree(sample_dir, src)
    annotations = voc_folder(sorted(src.glob("*.jpg")), tmp_path / "voc")
    done = detectionjob(["run", "--input", str(src), "--output", str(out), "--model", FAST_MODEL,
                         "--weights", "none", "--score-threshold", "0", "--evaluate-annotations",
                         str(annotations)], ray_tmpdir, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    report = json.loads((out / "_evaluation.json").read_text())
    assert summary["evaluation"] == {"annotations": str(annotations), "map": report["map"],
                                     "map_50": report["map_50"], "report": str(out / "_evaluation.json")}
    assert json.loads((out / "_summary.json").read_text())["evaluation"] == summary["evaluation"]
    assert report["images"] == len(list(src.glob("*.jpg"))) and report["objects"] == 2 * report["images"]
    assert (out / "_evaluation" / "pr_curves.png").read_bytes().startswith(b"\x89PNG")
    assert "evaluated against" in done.stderr
    again = detectionjob(["evaluate", "--results", str(out), "--annotations", str(annotations),
                          "--output", str(tmp_path / "again")], ray_tmpdir, tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["map"] == report["map"]  # the same numbers as evaluate's own


def test_annotations_that_are_not_there_fail_before_any_work(sample_dir, tmp_path, ray_tmpdir):
    out = tmp_path / "out"
    done = detectionjob(["run", "--input", str(sample_dir), "--output", str(out), "--model", FAST_MODEL,
                         "--weights", "none", "--evaluate-annotations", str(tmp_path / "no-such.json")],
                        ray_tmpdir, tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"detectionjob run: error: --evaluate-annotations: {tmp_path / 'no-such.json'}: not found (a COCO "
        "instances JSON file or a folder of Pascal VOC XML files)")
    assert not list(out.glob("part-*")) and not (out / "_summary.json").exists()
