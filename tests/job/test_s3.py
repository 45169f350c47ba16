"""The job reads from and writes to a real S3-compatible server (MinIO from the test harness)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from jobtest import FAST_MODEL

from inference.pipeline import RunConfig, run


@pytest.mark.cluster
def test_s3_input_and_output(minio_s3, ray_runtime, sample_dir):
    fs = minio_s3.filesystem()
    bucket = minio_s3.bucket
    images = sorted(sample_dir.glob("*.jpg"))[:3]
    for p in images:
        with fs.open_output_stream(f"{bucket}/voc/JPEGImages/{p.name}") as f:
            f.write(p.read_bytes())
    with fs.open_output_stream(f"{bucket}/voc/JPEGImages/broken.jpg") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    with fs.open_output_stream(f"{bucket}/voc/Annotations/a.xml") as f:
        f.write(b"<annotation/>")

    base = dict(input=f"s3://{bucket}/voc/", output=f"s3://{bucket}/results/", model=FAST_MODEL,
                weights="none", score_threshold=0.0, batch_size=2, shard_size=1, max_failed_fraction=0.5)
    summary = run(RunConfig(**base, samples=1, limit=3))
    table = pq.read_table(f"{bucket}/results/", filesystem=fs)
    paths = sorted(table.column("path").to_pylist())
    assert paths == sorted(f"s3://{bucket}/voc/JPEGImages/{n}" for n in
                           ["broken.jpg", images[0].name, images[1].name])
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in table.to_pylist()}
    assert rows["broken.jpg"]["error"] and rows["broken.jpg"]["boxes"] is None
    assert rows[images[0].name]["error"] is None and len(rows[images[0].name]["boxes"]) > 0

    with fs.open_input_stream(f"{bucket}/results/_summary.json") as f:
        on_s3 = json.loads(f.read())
    assert on_s3["images"] == summary["images"] == 3 and on_s3["failed_images"] == 1
    assert summary["samples"] and summary["samples"][0].startswith(f"s3://{bucket}/results/_samples/")
    assert fs.get_file_info(summary["samples"][0][len("s3://"):]).size > 0

    resumed = run(RunConfig(**base, resume=True))
    assert resumed["skipped_existing"] == 3 and resumed["images"] == 1
    again = pq.read_table(f"{bucket}/results/", filesystem=fs).column("path").to_pylist()
    assert len(again) == 4 == len(set(again))
