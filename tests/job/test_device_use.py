"""How well a run used its devices (inference.efficiency): the numbers, and the sentence made to
happen on the CPU both ways: images slow to arrive (a store that answers each GET late) against a
fast model, and a heavy model on images at hand."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from harness.s3proxy import S3Proxy
from jobtest import FAST_MODEL

from inference.efficiency import HEARTBEAT, BusyClock, advice, device_seconds, device_use
from inference.model_config import DEFAULT_MODEL, ModelConfig
from inference.models import build_model


def test_device_seconds_count_each_actor_from_its_start_to_its_last_heartbeat():
    now = 1000.0
    actors = {
        ("n1", 1): {"started": 900.0, "last": 998.0, "devices": 1.0},  # alive: to now
        ("n1", 2): {"started": 900.0, "last": 950.0, "devices": 2.0},  # gone after its last beat
    }
    assert device_seconds(actors, now) == pytest.approx(100.0 + 2 * (50.0 + HEARTBEAT))


def test_device_use_numbers_and_cost():
    use = device_use(3600.0, 1800.0, 360.0, 7200, 12.5, 2.5)
    assert use["busy_fraction"] == 0.5 and use["input_wait_fraction"] == 0.1
    assert use["images_per_device_hour"] == 7200.0 and use["estimated_cost"] == 2.5
    assert use["seconds_to_first_detection"] == 12.5 and use["advice"].startswith("model-bound: ")
    assert "estimated_cost" not in device_use(3600.0, 1.0, 0.0, 1, None, None)
    assert device_use(0.0, 0.0, 0.0, 0, None, None) == {"device_seconds": 0.0,
                                                         "seconds_to_first_detection": None}


@pytest.mark.parametrize(("busy", "wait", "verdict"), [
    (0.8, 0.05, "model-bound"), (0.35, 0.1, "model-bound"), (0.1, 0.6, "input-bound"),
    (0.3, 0.5, "input-bound"), (0.1, 0.1, "mostly idle"), (0.25, 0.15, "mostly idle"),
])
def test_advice(busy, wait, verdict):
    sentence = advice(busy, wait)
    assert sentence.startswith(f"{verdict}: the detectors computed {busy:.0%}")
    assert f"waited {wait:.0%}" in sentence


def test_busy_clock_on_the_cpu_counts_only_the_timed_work():
    clock = BusyClock("cpu")
    token = clock.start()
    time.sleep(0.2)
    clock.stop(token)
    time.sleep(0.2)  # not timed
    assert 0.19 <= clock.total() < 0.35


def test_busy_clock_counts_overlapping_passes_once():
    """``--streams 2``: two passes at once are busy time once, not twice; a gap between passes is
    not busy time; a pass still running is not counted yet."""
    clock = BusyClock("cpu")
    first = clock.start()
    time.sleep(0.2)
    second = clock.start()  # overlaps the first for 0.1 s
    time.sleep(0.1)
    clock.stop(first)
    time.sleep(0.2)
    clock.stop(second)  # busy 0.5 s so far, 0.6 s of passes
    time.sleep(0.2)  # idle
    third = clock.start()
    time.sleep(0.1)
    running = clock.start()
    clock.stop(third)
    assert 0.58 <= clock.total() < 0.75
    clock.stop(running)
    assert clock.total() >= 0.6


def run_job(args: list[str], tmp_path: Path, env: dict[str, str] | None = None) -> dict:
    full = {**os.environ, **(env or {}), "PYTHONWARNINGS": "ignore"}
    full.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-m", "inference", "run", "--weights", "none", *args],
                          capture_output=True, text=True, cwd=tmp_path, env=full, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def check_numbers(summary: dict) -> None:
    device, busy, wait = summary["device_seconds"], summary["busy_seconds"], summary["input_wait_seconds"]
    assert 0 < busy + wait <= device <= summary["wall_seconds"] + 1, summary  # one detector here
    assert summary["busy_fraction"] == pytest.approx(busy / device, abs=1e-3)
    assert summary["input_wait_fraction"] == pytest.approx(wait / device, abs=1e-3)
    assert summary["images_per_device_hour"] == pytest.approx(summary["images"] * 3600 / device, rel=1e-3)
    assert 0 < summary["seconds_to_first_detection"] < summary["wall_seconds"]
    # the detector had its model before it detected anything
    assert 0 < summary["seconds_to_detector_ready"] <= summary["seconds_to_first_detection"], summary
    check_startup(summary)


def check_startup(summary: dict) -> None:
    """The start-up timeline: each step after the one it waits for, the last two as reported."""
    steps = summary["startup_seconds"]
    order = ["ray_started", "pipeline_started"], ["detector_process", "detector_setup", "torch_imported",
                                                  "detector_ready", "first_detection"]
    for chain in order:
        times = [steps[k] for k in chain]
        assert all(t is not None for t in times) and times == sorted(times), steps
    assert steps["ray_started"] > 0, steps  # Ray starts (or is joined) after the job started
    assert steps["detector_ready"] == summary["seconds_to_detector_ready"]
    assert steps["first_detection"] == summary["seconds_to_first_detection"]


@pytest.mark.slow
@pytest.mark.waits
@pytest.mark.cluster
def test_images_slow_to_arrive_make_the_run_input_bound(minio_s3, sample_dir, tmp_path):
    """Each GET answered 6 s late, a fast model, one image per batch: the detector mostly waits
    (reading the next image overlaps the detection of this one: the model would have to take 3 s
    an image, 8 x its time on a quiet 2-core machine, to be the bottleneck)."""
    fs = minio_s3.filesystem()
    sources = sorted(sample_dir.glob("*.jpg"))
    for i in range(8):
        with fs.open_output_stream(f"{minio_s3.bucket}/slow/img_{i:02d}.jpg") as f:
            f.write(sources[i % len(sources)].read_bytes())
    proxy = S3Proxy(minio_s3.endpoint_url, delay=6.0)
    try:
        summary = run_job(["--input", minio_s3.uri("slow/"), "--output", str(tmp_path / "out"),
                           "--model", FAST_MODEL, "--batch-size", "1", "--workers", "1",
                           "--cost-per-device-hour", "3"], tmp_path, {"AWS_ENDPOINT_URL": proxy.url})
    finally:
        proxy.close()
    check_numbers(summary)
    assert summary["input_wait_fraction"] > summary["busy_fraction"], summary
    assert summary["advice"].startswith("input-bound: "), summary["advice"]
    assert summary["estimated_cost"] == pytest.approx(summary["device_seconds"] / 3600 * 3, abs=1e-3)


@pytest.mark.slow
def test_the_default_model_on_images_at_hand_is_model_bound(sample_dir, tmp_path):
    """fasterrcnn_resnet50_fpn_v2 (the default, the seed's model) itself: its rows are real boxes
    in the image, and on the CPU it is heavy enough that the detector mostly computes."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for p in sorted(sample_dir.glob("*.jpg"))[:2]:  # one batch: ~10 s of the model, ~2x its set-up
        shutil.copy(p, src / p.name)
    summary = run_job(["--input", str(src), "--output", str(out), "--score-threshold", "0",
                       "--batch-size", "2", "--workers", "1"], tmp_path)
    assert summary["model"] == DEFAULT_MODEL == "fasterrcnn_resnet50_fpn_v2"
    check_numbers(summary)
    assert summary["busy_fraction"] > summary["input_wait_fraction"], summary
    assert summary["advice"].startswith("model-bound: "), summary["advice"]
    assert "estimated_cost" not in summary
    rows = pd.read_parquet(out)
    assert len(rows) == 2
    _, categories = build_model(ModelConfig(weights="none"))
    for row in rows.itertuples():
        assert pd.isna(row.error) and row.model == DEFAULT_MODEL
        boxes = np.array([list(b) for b in row.boxes]).reshape(-1, 4)
        assert len(boxes) > 0
        assert (boxes >= 0).all() and (boxes[:, 2] <= 320 + 1e-3).all() and (boxes[:, 3] <= 240 + 1e-3).all()
        assert list(row.label_names) == [categories[i] for i in row.labels]
