"""A store that stops answering is waited for, not turned into error rows; one that stays down
ends the job naming it (inference.store). Against a real MinIO of the test's own, stopped and
started again at the same address."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest
from harness.minio import MinioS3
from harness.procs import free_port
from harness.s3proxy import S3Proxy
from jobtest import FAST_MODEL

from inference.store import StoreDown, answers, check, is_network, store_uri

IMAGES = 48

pytestmark = pytest.mark.cluster


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MinioS3]:
    """A MinIO of this test's own (the session's stays up for the other tests)."""
    s3 = MinioS3(tmp_path / "minio-logs")
    (tmp_path / "minio-logs").mkdir()
    s3.start()
    try:
        yield s3
    finally:
        s3.stop()


def test_a_store_that_does_not_answer_is_told_from_a_missing_object(store: MinioS3):
    fs = store.filesystem()
    with pytest.raises(OSError) as missing:
        fs.open_input_stream(f"{store.bucket}/no/such.jpg")
    assert not is_network(missing.value) and answers(fs, f"{store.bucket}/no/such.jpg")
    check(missing.value, fs, f"{store.bucket}/no/such.jpg")  # the object's fault: no StoreDown

    closed = store.filesystem(endpoint_override=f"127.0.0.1:{free_port()}")
    with pytest.raises(OSError) as refused:
        closed.open_input_stream(f"{store.bucket}/a.jpg")
    assert is_network(refused.value), refused.value
    assert not answers(closed, f"{store.bucket}/a.jpg")
    with pytest.raises(StoreDown, match=f"s3://{store.bucket} does not answer: .*NETWORK_CONNECTION"):
        check(refused.value, closed, f"{store.bucket}/a.jpg")
    assert store_uri(closed, f"{store.bucket}/x/y") == f"s3://{store.bucket}"
    check(refused.value, pafs.LocalFileSystem(), "/x")  # a local file is never a store outage


def stage(store: MinioS3, sample_dir: Path, n: int = IMAGES) -> list[str]:
    fs = store.filesystem()
    sources = sorted(sample_dir.glob("*.jpg"))
    keys = []
    for i in range(n):
        key = f"{store.bucket}/in/img_{i:03d}.jpg"
        with fs.open_output_stream(key) as f:
            f.write(sources[i % len(sources)].read_bytes())
        keys.append(f"s3://{key}")
    return keys


def start(store: MinioS3, out: Path, tmp_path: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, **store.env, "PYTHONWARNINGS": "ignore"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "inference", "run", "--input", store.uri("in/"), "--output", str(out),
         "--model", FAST_MODEL, "--weights", "none", "--batch-size", "1", "--shard-size", "2",
         "--workers", "1", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=tmp_path,
        env=env)


def wait_for_parts(proc: subprocess.Popen, out: Path, n: int) -> None:
    deadline = time.monotonic() + 300
    while len(list(out.glob("part-*.parquet"))) < n:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, f"fewer than {n} parts after 300 s"
        time.sleep(0.1)


def end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_an_outage_is_waited_out_and_no_image_becomes_an_error_row(store, sample_dir, tmp_path):
    keys = stage(store, sample_dir)
    out = tmp_path / "out"
    proc = start(store, out, tmp_path)
    try:
        wait_for_parts(proc, out, 2)
        store.stop_server()  # the input's store goes away mid-job ...
        time.sleep(10)
        store.start()  # ... and comes back, at the same address
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        end(proc)
    assert proc.returncode == 0, stderr[-3000:]
    rows = pd.read_parquet(out)
    assert sorted(rows.path) == keys  # every image, once
    assert rows.error.isna().all(), rows.error.dropna().head().tolist()
    assert json.loads(stdout)["failed_images"] == 0


@pytest.mark.slow
def test_a_store_that_stays_down_ends_the_job_naming_it(store, sample_dir, tmp_path):
    stage(store, sample_dir)
    out = tmp_path / "out"
    proc = start(store, out, tmp_path, "--store-wait", "10")
    try:
        wait_for_parts(proc, out, 2)
        store.stop_server()
        down = time.monotonic()
        stdout, stderr = proc.communicate(timeout=600)
        took = time.monotonic() - down
    finally:
        end(proc)
    assert proc.returncode == 1, stderr[-3000:]
    verdict = f"detectionjob run: failed: s3://{store.bucket}: did not answer for 10 s (--store-wait)"
    assert verdict in stderr, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert took < 120, took  # the wait, the client's timeouts and Ray's shutdown; not for ever
    rows = pd.read_parquet(out)  # what was done before is kept, and no image was blamed
    assert len(rows) >= 2 and rows.error.isna().all()
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["status"] == "failed" and summary["reason"].startswith(f"s3://{store.bucket}: did not")


@pytest.mark.slow
@pytest.mark.waits
def test_an_object_whose_read_never_returns_becomes_an_error_row(store, sample_dir, tmp_path):
    """The store answers, one object never does: the client's timeouts (not the stall watchdog,
    not for ever) make it an error row; every other image is detected and the job ends 0."""
    keys = stage(store, sample_dir, 24)
    poison = keys[5]
    proxy = S3Proxy(store.endpoint_url, hang=poison.rsplit("/", 1)[1])
    out = tmp_path / "out"
    env = {**os.environ, **store.env, "AWS_ENDPOINT_URL": proxy.url, "PYTHONWARNINGS": "ignore"}
    env.pop("RAY_ADDRESS", None)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "inference", "run", "--input", store.uri("in/"), "--output", str(out),
             "--model", FAST_MODEL, "--weights", "none", "--batch-size", "2", "--shard-size", "4",
             "--workers", "1"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    finally:
        proxy.close()
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pd.read_parquet(out).set_index("path")
    assert sorted(rows.index) == keys
    assert rows.error.drop(poison).isna().all()
    assert "Timeout was reached" in rows.error[poison], rows.error[poison]
    summary = json.loads(done.stdout)
    assert summary["failed_images"] == 1 and summary["stalls_recovered"] == 0
