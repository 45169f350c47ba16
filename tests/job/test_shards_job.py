"""Shards end to end: resume of a growing or changed input, retry of errors, failure policy,
samples chosen while streaming, and a job killed mid-way then resumed (nothing lost, nothing twice)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from jobtest import FAST_MODEL, joining

from inference.pipeline import JobFailed, RunConfig, run
from inference.sampling import candidates


def rows_of(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out).sort_values("path")


def copy_images(sample_dir: Path, dst: Path, n: int) -> list[Path]:
    dst.mkdir(parents=True, exist_ok=True)
    sources = sorted(sample_dir.glob("*.jpg"))
    made = []
    for i in range(n):
        target = dst / f"img_{i:03d}.jpg"
        shutil.copy(sources[i % len(sources)], target)
        made.append(target)
    return made


def base(src: Path, out: Path, **kw) -> dict:
    return dict(input=str(src), output=str(out), model=FAST_MODEL, weights="none", score_threshold=0.0,
                batch_size=2, **kw)


def test_growing_and_shrinking_input_resumes_by_shard(ray_runtime, sample_dir, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    copy_images(sample_dir, src, 12)
    first = run(RunConfig(**base(src, out, shard_size=3)))
    parts = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    assert first["images"] == 12 and first["shards"] == len(parts)
    shutil.copy(src / "img_000.jpg", src / "img_005b.jpg")  # the bucket grew by one image
    grown = run(RunConfig(**base(src, out, shard_size=3, resume=True)))
    rows = rows_of(out)
    assert len(rows) == 13 and rows.path.is_unique and str(src / "img_005b.jpg") in set(rows.path)
    # Content-defined boundaries: one inserted name changes the shard it falls into (and, when that
    # shard reaches the 4x cap, the next one); every other shard keeps its id and its part file.
    now = {p.name: p for p in out.glob("part-*.parquet")}
    kept = parts.keys() & now.keys()
    assert len(parts.keys() - kept) <= 2, (sorted(parts), sorted(now))
    assert all(now[name].stat().st_mtime_ns == parts[name] for name in kept)  # not rewritten
    rerun = sum(pq.read_metadata(now[name]).num_rows for name in now.keys() - kept)
    assert grown["images"] == rerun and grown["skipped_existing"] == 13 - rerun, grown
    (src / "img_010.jpg").unlink()  # ... and lost one
    shrunk = run(RunConfig(**base(src, out, shard_size=3, resume=True)))
    rows = rows_of(out)
    assert len(rows) == 12 and rows.path.is_unique and str(src / "img_010.jpg") not in set(rows.path)
    assert shrunk["removed_stale_parts"] >= 1 and shrunk["images"] < 12


def test_resume_refuses_other_settings_unless_told(ray_runtime, sample_dir, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    copy_images(sample_dir, src, 2)
    run(RunConfig(**base(src, out)))
    with pytest.raises(ValueError, match=r"--resume: .*score_threshold: 0\.0 then, 0\.5 now"):
        run(RunConfig(**{**base(src, out), "score_threshold": 0.5}, resume=True))
    assert len(rows_of(out)) == 2  # the refusal touched nothing
    done = run(RunConfig(**{**base(src, out), "score_threshold": 0.5}, resume=True, allow_config_change=True))
    assert done["skipped_existing"] == 2


def test_retry_errors_detects_only_the_error_rows_again(ray_runtime, sample_dir, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    images = copy_images(sample_dir, src, 4)
    good = images[1].read_bytes()
    images[1].write_bytes(good[: len(good) // 3])  # truncated for now
    first = run(RunConfig(**base(src, out, shard_size=100, max_failed_fraction=1.0)))
    assert first["failed_images"] == 1
    before = rows_of(out).set_index("path")
    images[1].write_bytes(good)  # repaired; the shard's URIs (hence its id) are unchanged
    plain = run(RunConfig(**base(src, out, shard_size=100, resume=True)))
    assert plain["images"] == 0  # a finished shard is not detected again without --retry-errors
    retried = run(RunConfig(**base(src, out, shard_size=100, resume=True, retry_errors=True)))
    after = rows_of(out).set_index("path")
    assert retried["images"] == 1 and retried["failed_images"] == 0 and retried["skipped_existing"] == 3
    assert len(after) == 4 and after.error.isna().all()
    for path in before.index.drop(str(images[1])):
        assert after.loc[path].scores.tolist() == before.loc[path].scores.tolist()


def test_too_many_failures_fail_the_job_after_writing_everything(ray_runtime, sample_dir, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    copy_images(sample_dir, src, 3)
    (src / "bad.jpg").write_bytes(b"not a jpeg")
    reason = r"1 of 4 images failed \(25\.0%\), more than --max-failed-fraction 0\.2; for example: \w+"
    with pytest.raises(JobFailed, match=reason):
        run(RunConfig(**base(src, out, max_failed_fraction=0.2)))
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["status"] == "failed" and "max-failed-fraction" in summary["reason"]
    assert len(rows_of(out)) == 4  # every result is there, the error row too
    ok = run(RunConfig(**base(src, out, max_failed_fraction=0.25)))
    assert ok["status"] == "succeeded" and ok["failed_images"] == 1


def test_samples_are_the_bottom_k_of_all_rows(ray_runtime, sample_dir, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    copy_images(sample_dir, src, 9)
    summary = run(RunConfig(**base(src, out, shard_size=2, samples=3)))
    expected = [r["path"] for r in candidates(pq.read_table(out), 3)]
    drawn = [Path(p).stem.split("-", 1)[1] for p in summary["samples"]]
    assert drawn == [Path(p).stem for p in expected]
    assert summary["seconds_to_first_detection"] is not None and summary["listing_seconds"] is not None


def test_killed_job_resumes_without_losing_or_repeating_rows(ray_runtime, sample_dir, tmp_path):
    """SIGKILL the driver mid-job (a Pod evicted, a suspended RayJob); --resume completes it."""
    src, out = tmp_path / "in", tmp_path / "out"
    copy_images(sample_dir, src, 16)
    argv = [sys.executable, "-m", "inference", "run", "--input", str(src), "--output", str(out),
            "--model", FAST_MODEL, "--weights", "none", "--score-threshold", "0", "--batch-size", "1",
            "--shard-size", "2", *joining(ray_runtime)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while len(list(out.glob("part-*.parquet"))) < 2 and proc.poll() is None:
            assert time.monotonic() < deadline, "no part written in 300 s"
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    written = {p.name for p in out.glob("part-*.parquet")}
    partial = pq.read_table(out).num_rows
    assert 0 < partial < 16
    resumed = run(RunConfig(**base(src, out, shard_size=2, resume=True)))
    rows = rows_of(out)
    assert len(rows) == 16 and rows.path.is_unique
    assert resumed["skipped_existing"] >= partial and resumed["images"] == 16 - resumed["skipped_existing"]
    assert written <= {p.name for p in out.glob("part-*.parquet")}  # finished parts were kept
    assert not list(out.glob(".part-*"))  # a part cut off mid-write was never published, and is gone


def test_detection_starts_before_the_listing_ends(ray_runtime, sample_dir, tmp_path):
    """The manifest is a named pipe: its listing cannot end before the test closes it, and the test
    closes it only after a part file (detected images) exists. Hours of listing before the first
    image is read cannot happen: the detectors consume shards as they are listed."""
    import threading

    images = copy_images(sample_dir, tmp_path / "in", 6)
    pipe, out = tmp_path / "list.txt", tmp_path / "out"
    os.mkfifo(pipe)
    seen_before_close: list[str] = []

    def feed() -> None:
        with open(pipe, "w") as f:  # blocks until the job's read task opens the pipe
            f.write("".join(f"{p}\n" for p in images[:2]))
            f.flush()
            deadline = time.monotonic() + 300
            while not list(out.glob("part-*.parquet")) and time.monotonic() < deadline:
                time.sleep(0.1)
            seen_before_close.extend(p.name for p in out.glob("part-*.parquet"))
            f.write("".join(f"{p}\n" for p in images[2:]))

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    summary = run(RunConfig(input_list=str(pipe), output=str(out), model=FAST_MODEL, weights="none",
                            score_threshold=0.0, batch_size=2, shard_size=1))
    feeder.join(timeout=30)
    assert seen_before_close, "no part was written while the listing was still open"
    assert summary["seconds_to_first_detection"] < summary["listing_seconds"], summary
    assert sorted(rows_of(out).path) == sorted(str(p) for p in images)
