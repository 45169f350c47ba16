"""``detectionjob run --evaluate-annotations`` (spec.evaluation on Kubernetes): the results are
scored as ``detectionjob evaluate`` scores them, right after detection; a wrong annotations URI
fails before any work."""

from __future__ import annotations

import json

from jobtest import FAST_MODEL, detectionjob


def test_a_run_evaluates_its_results_as_evaluate_does(cli_run, tmp_path, ray_tmpdir):
    done, src, out, annotations = cli_run.done, cli_run.input, cli_run.output, cli_run.annotations
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
