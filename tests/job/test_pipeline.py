"""The batch job end to end on a 2-CPU Ray runtime, checked against real outputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from jobtest import FAST_MODEL, joining
from PIL import Image

from inference.decode import decode_image
from inference.models import ModelConfig, build_model
from inference.output_schema import OUTPUT_SCHEMA
from inference.pipeline import RunConfig, run


def read_rows(out: Path) -> pd.DataFrame:
    """The output folder read as a Parquet dataset (samples and summary must not get in the way)."""
    return pd.read_parquet(out).sort_values("path")


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


@pytest.fixture(scope="module")
def equivalence_run(ray_runtime, sample_dir, test_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("equivalence")
    config = RunConfig(input=str(sample_dir), output=str(out), model=FAST_MODEL,
                       weights=str(test_weights), score_threshold=0.5, batch_size=4, samples=2)
    return out, run(config)


def test_matches_plain_pytorch_per_image(equivalence_run, sample_dir, test_weights):
    out, _ = equivalence_run
    rows = read_rows(out)
    model, categories = build_model(ModelConfig(FAST_MODEL, str(test_weights), score_threshold=0.5))
    total_boxes = 0
    assert len(rows) == 4
    for row in rows.itertuples():
        image = decode_image(Path(row.path).read_bytes())
        with torch.inference_mode():  # the example's single-image path
            ref = model([torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255])[0]
        ref_boxes, ref_scores = ref["boxes"].numpy(), ref["scores"].numpy()
        boxes = np.array([list(b) for b in row.boxes], dtype=np.float32).reshape(-1, 4)
        assert pd.isna(row.error)
        assert (row.width, row.height) == (320, 240)
        assert len(boxes) == len(ref_boxes)
        total_boxes += len(boxes)
        if not len(boxes):
            continue
        overlap = iou(boxes, ref_boxes)
        match = overlap.argmax(axis=1)
        assert (overlap.max(axis=1) > 0.99).all()
        assert len(set(match)) == len(match)
        np.testing.assert_allclose(row.scores, ref_scores[match], atol=1e-3)
        assert list(row.labels) == ref["labels"].numpy()[match].tolist()
        assert list(row.label_names) == [categories[i] for i in row.labels]
    assert total_boxes > 0, "the test weights must produce boxes"


def test_schema_with_pyarrow_and_pandas(equivalence_run):
    out, _ = equivalence_run
    table = pq.read_table(out)
    assert table.schema.remove_metadata().equals(OUTPUT_SCHEMA)
    frame = table.to_pandas()
    assert set(frame.columns) == set(OUTPUT_SCHEMA.names)
    assert "image" not in frame.columns  # no pixels in the output
    row = frame.iloc[0]
    assert isinstance(row.path, str) and isinstance(row.model, str) and row.model == FAST_MODEL
    assert frame.width.dtype == np.int32 and frame.height.dtype == np.int32
    for boxes in frame.boxes:
        assert all(len(b) == 4 for b in boxes)
        assert all(b[0] <= b[2] and b[1] <= b[3] for b in boxes)


def test_summary_agrees_with_the_parquet(equivalence_run):
    out, summary = equivalence_run
    rows = read_rows(out)
    on_disk = json.loads((out / "_summary.json").read_text())
    detections = int(sum(len(s) for s in rows.scores))
    for s in (summary, on_disk):
        assert s["images"] == len(rows) == 4
        assert s["failed_images"] == 0
        assert s["detections"] == detections
        assert sum(s["per_class"].values()) == detections
        assert s["images_per_second"] > 0 and s["wall_seconds"] > 0
    # what a finished run leaves: its parts, settings, summary and samples; no attempt markers
    names = {p.name for p in out.iterdir() if not p.name.startswith("part-")}
    assert names == {"_job.json", "_summary.json", "_samples"}


def test_samples_are_annotated_originals(equivalence_run):
    out, summary = equivalence_run
    pngs = sorted((out / "_samples").glob("*.png"))
    assert len(pngs) == 2 == len(summary["samples"])
    for png in pngs:
        drawn = np.asarray(Image.open(png).convert("RGB"))
        original = Path(read_rows(out).path.iloc[0]).parent / (png.stem.split("-", 1)[1] + ".jpg")
        assert drawn.shape == decode_image(original.read_bytes()).shape
        assert (drawn != decode_image(original.read_bytes())).any(), "boxes must be drawn"


def test_bad_files_become_error_rows(ray_runtime, sample_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for p in sorted(sample_dir.glob("*.jpg"))[:2]:
        shutil.copy(p, src / p.name)
    good = sorted(sample_dir.glob("*.jpg"))[0].read_bytes()
    (src / "zero.png").write_bytes(b"")
    (src / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (src / "corrupt.jpg").write_bytes(np.random.default_rng(0).bytes(4096))
    (src / "notes.jpeg").write_text("this is not an image\n")
    (src / "ignored.txt").write_text("not listed: wrong extension\n")
    out = tmp_path / "out"
    summary = run(RunConfig(input=str(src), output=str(out), model=FAST_MODEL, weights="none",
                            score_threshold=0.0, batch_size=2, max_failed_fraction=1.0))
    rows = read_rows(out)
    rows = rows.set_index(rows.path.map(lambda p: Path(p).name))
    assert sorted(rows.index) == ["corrupt.jpg", "notes.jpeg", "sample_0000.jpg", "sample_0001.jpg",
                                  "truncated.jpg", "zero.png"]
    for name in ("corrupt.jpg", "notes.jpeg", "truncated.jpg", "zero.png"):
        assert isinstance(rows.loc[name, "error"], str) and rows.loc[name, "error"]
        assert rows.loc[name, "boxes"] is None
    assert "0 bytes" in rows.loc["zero.png", "error"]
    assert "truncated" in rows.loc["truncated.jpg", "error"]
    for name in ("sample_0000.jpg", "sample_0001.jpg"):
        assert pd.isna(rows.loc[name, "error"])
        assert len(rows.loc[name, "boxes"]) > 0  # threshold 0: the random model reports boxes
    assert summary["failed_images"] == 4 and summary["images"] == 6


def test_rerun_does_not_duplicate_and_resume_skips_finished_shards(ray_runtime, sample_dir, tmp_path):
    out = tmp_path / "out"
    base = dict(input=str(sample_dir), output=str(out), model=FAST_MODEL, weights="none",
                score_threshold=0.0, batch_size=4, shard_size=1)
    run(RunConfig(**base, limit=2))
    first = read_rows(out)
    assert len(first) == 2
    run(RunConfig(**base, limit=2))  # overwrite (the default): same rows, not twice as many
    again = read_rows(out)
    assert len(again) == 2 and list(again.path) == list(first.path)
    summary = run(RunConfig(**base, resume=True))
    rows = read_rows(out)
    assert summary["skipped_existing"] == 2 and summary["images"] == 2 and summary["listed_images"] == 4
    assert len(rows) == 4 and rows.path.is_unique
    idle = run(RunConfig(**base, resume=True))
    assert idle["images"] == 0 and idle["skipped_existing"] == 4 and len(read_rows(out)) == 4


def test_workers_equal_to_cpus_does_not_deadlock(ray_runtime, sample_dir, tmp_path):
    """The reference pipeline hangs with concurrency=2 on 2 CPUs; ours must finish (the command,
    joining the tests' 2-CPU Ray runtime)."""
    argv = [sys.executable, "-m", "inference", "run", "--input", str(sample_dir),
            "--output", str(tmp_path / "o"), "--model", FAST_MODEL, "--weights", "none", "--workers", "2",
            "--batch-size", "1", *joining(ray_runtime)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "capped to 1" in done.stderr
    assert json.loads(done.stdout)["images"] == 4
