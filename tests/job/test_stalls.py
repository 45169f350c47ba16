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

from inference.model_config import ModelConfig
from inference.shard_source import Tally
from inference.shard_stage import ShardStage
from inference.uris import resolve
from inference.watchdog import Watchdog, _kill, bounds, process_start, stat_fields

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
    tally.running[("node-b", 22, 0)]["since"] -= 400
    assert [s["pid"] for s in tally.take_stalled(100, 500)] == [22]
    assert tally.snapshot()["batches_since_stall"] == 0
    assert tally.snapshot()["batch_p95"] is not None


def test_a_detector_running_two_batches_at_once_is_stopped_once_for_both():
    """``--streams 2``: one process, two batches in flight; the stalled one stops the process, and
    the other batch (ended with it) is neither handed out again nor left to stall later."""
    tally = Tally(1)
    tally.batch_started("node-a", 11, "s2", "/x/9.jpg", 1)
    tally.batch_finished("node-a", 11, 1)  # slot 1 finished one: the detector is seasoned
    tally.batch_started("node-a", 11, "s1", "/x/1.jpg", 0)
    tally.batch_started("node-a", 11, "s2", "/x/10.jpg", 1)
    assert set(tally.running) == {("node-a", 11, 0), ("node-a", 11, 1)}  # neither overwrote the other
    tally.running[("node-a", 11, 0)]["since"] -= 200
    tally.running[("node-a", 11, 1)]["since"] -= 150
    stalled = tally.take_stalled(100, 500)
    assert [(s["pid"], s["shard"], s["uri"]) for s in stalled] == [(11, "s1", "/x/1.jpg")]  # the oldest
    assert tally.running == {} and tally.take_stalled(100, 500) == []


def test_the_tally_hands_out_each_silent_detector_once_until_it_is_heard_from_again():
    tally = Tally(1)
    tally.actor_alive("node-a", 11, 1.0, 0.0, 5001)
    tally.actor_alive("node-b", 22, 1.0, 0.0, 5002)
    tally.batch_started("node-a", 11, "s1", "/x/1.jpg")
    tally.batch_finished("node-a", 11)  # seasoned: the bound; node-b has not finished one yet
    tally.batch_started("node-a", 11, "s1", "/x/2.jpg")
    assert tally.take_stalled(100, 500) == []
    for actor in tally.actors.values():
        actor["last"] -= 200  # neither heard from for 200 s; a's batch is young
    (silent,) = tally.take_stalled(100, 500)
    assert (silent["pid"], silent["silent"], silent["process"]) == (11, True, 5001)
    assert (silent["shard"], silent["uri"], silent["bound"]) == ("s1", "/x/2.jpg", 100)
    assert tally.running == {} and tally.take_stalled(100, 500) == []  # once, its batch with it
    tally.actors[("node-b", 22)]["last"] -= 400  # b: past its first bound, between batches
    (silent,) = tally.take_stalled(100, 500)
    assert (silent["pid"], silent["shard"], silent["uri"]) == (22, None, None)
    tally.actor_alive("node-b", 22, 1.0, 0.0, 5002)  # heard from again: watched again
    tally.actors[("node-b", 22)]["last"] -= 600
    assert [s["pid"] for s in tally.take_stalled(100, 500)] == [22]
    assert tally.snapshot()["device_seconds"] > 0  # the heartbeats still count the devices


def test_the_stall_watchdog_stops_only_the_process_it_was_told_of():
    """A pid names a process only with its start time: a pid given again is never stopped."""
    proc = subprocess.Popen(["sleep", "300"])
    try:
        started = process_start(proc.pid)
        assert started is not None and process_start(os.getpid()) != started
        assert _kill(proc.pid, started + 1) is False and proc.poll() is None
        assert _kill(proc.pid, started) is True
        assert proc.wait(timeout=10) == -signal.SIGKILL
        assert _kill(proc.pid, started) is False and process_start(proc.pid) is None
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def gone_for_good(pid: int, within: float = 15.0) -> bool:
    """``pid`` has ended: no process, or a zombie its parent (the raylet) has not reaped yet (a
    SIGKILLed process stays one for a moment; checking at once raced with the reaping)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        fields = stat_fields(pid)
        if fields is None or fields[0] == b"Z":
            return True
        time.sleep(0.2)
    return False


def test_a_detector_stopped_between_batches_is_found_by_its_silence(ray_runtime, tmp_path):
    """A detector stopped while it holds no batch (its next shard queued for it, waiting for ever)
    is stopped once not heard from for the bound; a detector that the pool ended is let be."""
    ray = ray_runtime
    tally = ray.remote(Tally).options(num_cpus=0).remote(1)
    stage = ray.remote(ShardStage).options(num_cpus=0, max_restarts=0)
    kwargs = {"spec": ModelConfig(FAST_MODEL, "none"), "out": resolve(str(tmp_path), "--output"),
              "inputs": {}, "batch_size": 1, "tally": tally}
    stopped, ended = stage.remote(**kwargs), stage.remote(**kwargs)
    actors = ray.get(tally.__ray_call__.remote(lambda t: dict(t.actors)), timeout=60)
    deadline = time.monotonic() + 120
    while len(actors) < 2:
        assert time.monotonic() < deadline, actors
        time.sleep(0.5)
        actors = ray.get(tally.__ray_call__.remote(lambda t: dict(t.actors)), timeout=60)
    pid_of = {ray.get(a.__ray_call__.remote(lambda s: s.where[1]), timeout=60): a for a in (stopped, ended)}
    (pid,) = (p for p, a in pid_of.items() if a is stopped)
    (gone,) = (p for p, a in pid_of.items() if a is ended)
    watchdog = Watchdog(tally, kwargs["out"], timeout=4)
    os.kill(pid, signal.SIGSTOP)
    ray.kill(ended)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while not lines or watchdog.killing:
            assert time.monotonic() < deadline, (lines, watchdog.killing)
            lines += watchdog.check({})
            time.sleep(0.5)
        assert len(lines) == 1 and watchdog.stalls == 1, lines  # the ended one is not a stall
        assert lines[0].startswith(f"stalled: a detector (pid {pid}, node "), lines
        assert "has not been heard from for" in lines[0] and "between batches" in lines[0], lines
        assert gone_for_good(pid)  # stopped for good
        assert f"pid {gone}," not in lines[0]
    finally:
        with_signal(pid, signal.SIGCONT)
        ray.kill(stopped)
        ray.kill(tally)


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
