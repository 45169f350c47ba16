"""A hung detector does not hang the job: a stopped detector process (SIGSTOP, as a process looks
when its GPU or a network read never returns) is found, stopped for good, restarted, and the job
ends with every image exactly once; a file whose read never returns becomes an error row."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from jobtest import FAST_MODEL, descendants, detector_processes

from inference.shard_source import Tally
from inference.watchdog import bounds

IMAGES = 24


def test_bounds():
    assert bounds(None, None) == (120.0, 600.0)  # nothing measured yet
    assert bounds(None, 0.5) == (120.0, 600.0)
    assert bounds(None, 30.0) == (300.0, 900.0)  # 10 x p95; the first batch 3 x that
    assert bounds(15, 30.0) == (15.0, 15.0)  # --batch-timeout
    assert bounds(0, 30.0) is None  # off


def test_the_tally_hands_out_each_stalled_batch_once():
    tally = Tally(1)
    tally.batch_started("node-a", 11, "s1", "/x/1.jpg")
    tally.batch_finished("node-a", 11)
    tally.batch_started("node-a", 11, "s1", "/x/2.jpg")  # a seasoned detector
    tally.batch_started("node-b", 22, "s2", "/x/3.jpg")  # its first batch
    assert tally.take_stalled(100, 500) == []
    for batch in tally.running.values():
        batch["since"] -= 200  # 200 s ago
    stalled = tally.take_stalled(100, 500)
    assert [(s["pid"], s["uri"], s["bound"]) for s in stalled] == [(11, "/x/2.jpg", 100)]
    assert tally.take_stalled(100, 500) == []  # once
    tally.running[("node-b", 22)]["since"] -= 400
    assert [s["pid"] for s in tally.take_stalled(100, 500)] == [22]
    assert tally.snapshot()["batches_since_stall"] == 0
    assert tally.snapshot()["batch_p95"] is not None


def start(args: list[str], tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "inference", "run", "--model", FAST_MODEL, "--weights",
                             "none", "--score-threshold", "0", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=tmp_path, env=env)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        for pid in descendants(proc.pid):  # a stopped process is continued, then all end
            with_signal(pid, signal.SIGCONT)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def with_signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


@pytest.mark.slow
@pytest.mark.waits
def test_a_stopped_detector_is_found_restarted_and_nothing_is_lost(sample_dir, tmp_path):
    """SIGSTOP the only detector mid-job, default settings: the job ends 0 a few minutes later."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    sources = sorted(sample_dir.glob("*.jpg"))
    for i in range(IMAGES):
        shutil.copy(sources[i % len(sources)], src / f"img_{i:03d}.jpg")
    proc = start(["--input", str(src), "--output", str(out), "--batch-size", "1", "--shard-size", "2",
                  "--workers", "1"], tmp_path)
    try:
        deadline = time.monotonic() + 300
        while len(list(out.glob("part-*.parquet"))) < 2:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no parts after 300 s"
            time.sleep(0.2)
        mine = sorted(detector_processes(proc.pid))
        assert len(mine) == 1, mine
        os.kill(mine[0], signal.SIGSTOP)
        stopped = time.monotonic()
        stdout, stderr = proc.communicate(timeout=600)
        took = time.monotonic() - stopped
    finally:
        stop(proc)
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout)
    rows = pd.read_parquet(out)
    assert sorted(rows.path) == sorted(str(p) for p in src.glob("*.jpg"))  # all, each exactly once
    assert rows.error.isna().all() and summary["images"] == IMAGES
    assert summary["stalls_recovered"] >= 1 and summary["timed_out_images"] == 0
    assert f"stalled: a detector (pid {mine[0]}," in stderr
    assert "recovered: images complete again" in stderr, stderr
    assert 120 <= took < 400  # the default bound (batches here take ~1 s), then restart and finish


@pytest.mark.slow
@pytest.mark.waits
def test_a_file_whose_read_never_returns_becomes_an_error_row(sample_dir, tmp_path):
    """A named pipe that nobody writes: opening it blocks for ever, as a read from a hung network
    filesystem does. It stalls its batch, then (one image at a time) itself, and becomes a row."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i, p in enumerate(sorted(sample_dir.glob("*.jpg"))[:4]):
        shutil.copy(p, src / f"img_{i}.jpg")
    os.mkfifo(src / "img_2_stuck.jpg")
    proc = start(["--input", str(src), "--output", str(out), "--batch-size", "2", "--batch-timeout", "10",
                  "--max-failed-fraction", "1"], tmp_path)
    try:
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        stop(proc)
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout)
    rows = pd.read_parquet(out).set_index("path")
    assert sorted(rows.index) == sorted(str(p) for p in src.iterdir())  # every image once
    stuck = str(src / "img_2_stuck.jpg")
    assert rows.loc[stuck, "error"].startswith("TimedOut: no result within 10 s, 2 attempts")
    assert rows.drop(stuck).error.isna().all()
    assert summary["timed_out_images"] == 1 and summary["failed_images"] == 1
    assert summary["stalls_recovered"] >= 2 and stderr.count("stalled: ") == summary["stalls_recovered"]
