"""``--streams``: a detector running several shards at once, each from its own thread (on a GPU,
its own CUDA stream; benchmarks/gpu_checks.py compares the outputs there). On the CPU the same code
runs: two streams must give exactly one stream's rows, and count each busy second once."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest
from jobtest import FAST_MODEL
from test_device_use import check_startup, run_job

from inference.options import RunConfig
from inference.pool import GPU_STREAMS, plan_pool
from inference.shards import cut

SHARD = 4  # --shard-size of the two runs: a shard boundary is a 1-in-SHARD hash


def test_several_streams_on_a_gpu_by_default_one_on_a_cpu_and_as_asked():
    assert plan_pool(None, None, 16, 1).streams == GPU_STREAMS >= 2
    assert plan_pool(None, None, 16, 0).streams == 1
    assert plan_pool(None, None, 16, 1, streams=3).streams == 3
    assert plan_pool(None, None, 16, 0, streams=2).streams == 2
    with pytest.raises(ValueError, match="--streams: must be >= 1"):
        RunConfig(input="x", output="y", streams=0).validate()


@pytest.mark.slow
def test_two_streams_give_one_streams_rows(sample_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    # Shards are content-defined (each path's hash, tmp_path's included): copies are added until the
    # input cuts into more shards than streams (12 images cut into 2 or fewer in about one run in
    # six: a boundary is a 1-in-4 hash), so that two shards run at once
    samples = sorted(sample_dir.glob("*.jpg"))
    i = 0
    while i < 12 or len(list(cut(sorted(str(f) for f in src.iterdir()), SHARD))) <= 2:
        shutil.copy(samples[i % len(samples)], src / f"{i:03d}_{samples[i % len(samples)].name}")
        i += 1
    tables, summaries = {}, {}
    for streams in (1, 2):
        out = tmp_path / f"out{streams}"
        summaries[streams] = run_job(
            ["--input", str(src), "--output", str(out), "--model", FAST_MODEL, "--score-threshold", "0",
             "--batch-size", "2", "--shard-size", str(SHARD), "--streams", str(streams)], tmp_path)
        tables[streams] = pq.read_table(out).sort_by("path")
    one, two = tables[1], tables[2]
    assert one.num_rows == two.num_rows == len(list(src.iterdir()))
    assert sum(len(s) for s in one.column("scores").to_pylist()) > 0  # boxes to compare
    for column in ("path", "boxes", "scores", "labels", "error"):
        assert one.column(column).to_pylist() == two.column(column).to_pylist(), column
    summary = summaries[2]
    assert summary["pool"]["streams"] == 2 and summaries[1]["pool"]["streams"] == 1
    assert summary["shards"] == len(list(cut(one.column("path").to_pylist(), SHARD))) > 2  # two ran at once
    # overlapping passes count once: never more busy seconds than the detector lived
    assert 0 < summary["busy_seconds"] <= summary["device_seconds"] <= summary["wall_seconds"] + 1, summary
    check_startup(summary)
