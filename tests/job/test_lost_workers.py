"""A multi-node Ray cluster on this machine (extra raylets, as Ray's own tests do). Losing workers
loses nothing: mid-job, a node holding a detector actor is removed, or an actor process is killed,
and the job still ends with every image exactly once. Detectors are sized by their node's CPUs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from jobtest import FAST_MODEL, detector_processes

IMAGES = 24


@pytest.fixture(scope="module")
def _cluster() -> Iterator:
    """A head without CPUs (the driver's node, as on KubeRay), for the module (a start costs ~13 CPU-s)."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 0,
                                                                    "include_dashboard": False})
    try:
        yield c, []
    finally:
        c.shutdown()


@pytest.fixture
def cluster(_cluster) -> Iterator:
    """The module's head and two live 2-CPU worker nodes: a node a test removed is replaced."""
    c, workers = _cluster
    workers[:] = [w for w in workers if w in c.worker_nodes]  # remove_node takes it off that list
    workers.extend(c.add_node(num_cpus=2) for _ in range(2 - len(workers)))  # each waits until registered
    yield c, list(workers)
def start_job(c, sample_dir: Path, tmp_path: Path, workers: str = "2") -> tuple[subprocess.Popen, Path, Path]:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    sources = sorted(sample_dir.glob("*.jpg"))
    for i in range(IMAGES):
        shutil.copy(sources[i % len(sources)], src / f"img_{i:03d}.jpg")
    argv = [sys.executable, "-m", "inference", "run", "--input", str(src), "--output", str(out),
            "--model", FAST_MODEL, "--weights", "none", "--score-threshold", "0", "--batch-size", "1",
            "--shard-size", "2", "--workers", workers, "--ray-address", c.address]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    return proc, src, out


def wait_for_parts(proc: subprocess.Popen, out: Path, n: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while len(list(out.glob("part-*.parquet"))) < n:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, f"fewer than {n} parts after {timeout} s"
        time.sleep(0.2)


def finish(proc: subprocess.Popen, timeout: float = 600) -> dict:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"the job did not finish in {timeout} s after losing a worker: {stderr[-3000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    return json.loads(stdout)  # Ray's notices (a raylet lost, a task retried) go to stderr


def assert_every_image_once(src: Path, out: Path, summary: dict) -> None:
    rows = pd.read_parquet(out)
    assert sorted(rows.path) == sorted(str(p) for p in src.glob("*.jpg"))  # all, each exactly once
    assert rows.error.isna().all()
    assert summary["images"] == IMAGES and summary["failed_images"] == 0


def test_removing_a_node_with_a_detector_loses_nothing(cluster, sample_dir, tmp_path):
    c, workers = cluster
    proc, src, out = start_job(c, sample_dir, tmp_path)
    try:
        wait_for_parts(proc, out, 2)
        raylets = {w.all_processes["raylet"][0].process.pid: w for w in workers}
        holding = set(detector_processes(os.getpid()).values()) & set(raylets)
        assert holding, "no detector actor found under a worker node's raylet"
        victim = raylets[sorted(holding)[0]]
        c.remove_node(victim, allow_graceful=False)
        summary = finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert_every_image_once(src, out, summary)


def test_killing_a_detector_actor_loses_nothing(cluster, sample_dir, tmp_path):
    """The only detector (``--workers auto``: one CPU actor per 8 CPUs, at least one) is killed
    mid-job; Ray starts it again and nothing is lost. Two 2-CPU worker nodes are 4 CPUs in all, but
    the detector runs on one of them: before and after, it gets 2 torch threads, not 4 (which
    oversubscribed its node)."""
    c, _ = cluster
    proc, src, out = start_job(c, sample_dir, tmp_path, workers="auto")
    try:
        wait_for_parts(proc, out, 2)
        victims = sorted(detector_processes(os.getpid()))
        assert victims, "no detector actor process found"
        os.kill(victims[0], signal.SIGKILL)
        summary = finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert summary["pool"]["max_size"] == 1
    assert summary["pool"]["torch_threads"] == 2
    assert summary["torch_threads_used"] == [2]
    assert_every_image_once(src, out, summary)


def test_a_file_that_keeps_killing_its_worker_becomes_an_error_row(ray_runtime, sample_dir, tmp_path):
    """Whenever the detector works on ``poison.jpg`` its process is SIGKILLed (as the kernel's OOM
    killer would): after a bounded number of deaths the file is an error row and the job ends."""
    import threading

    from inference.pipeline import RunConfig, run
    from inference.shard_stage import CAREFUL_AFTER, MAX_DEATHS

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i, p in enumerate(sorted(sample_dir.glob("*.jpg"))[:3]):
        shutil.copy(p, src / f"img_{i}.jpg")
        shutil.copy(p, src / f"more_{i}.jpg")
    poison = src / "poison.jpg"
    shutil.copy(sorted(sample_dir.glob("*.jpg"))[0], poison)
    kills: list[str] = []
    stop = threading.Event()

    def killer() -> None:
        killed_attempts: set[int] = set()
        while not stop.wait(0.02):
            markers = list((out / "_attempts").glob("*.json")) if (out / "_attempts").exists() else []
            for marker in markers:
                try:
                    state = json.loads(marker.read_text())
                except (OSError, ValueError):
                    continue
                whole = state["attempt"] <= CAREFUL_AFTER  # attempts at full speed die mid-shard
                if state["attempt"] in killed_attempts or not (whole or state.get("current") == str(poison)):
                    continue
                for pid in detector_processes(os.getpid()):
                    os.kill(pid, signal.SIGKILL)
                killed_attempts.add(state["attempt"])
                kills.append(f"attempt {state['attempt']}: {state.get('current')}")

    watcher = threading.Thread(target=killer, daemon=True)
    watcher.start()
    try:
        summary = run(RunConfig(input=str(src), output=str(out), model=FAST_MODEL, weights="none",
                                score_threshold=0.0, batch_size=2, shard_size=1000, max_failed_fraction=1.0))
    finally:
        stop.set()
        watcher.join()
    rows = pd.read_parquet(out).set_index("path")
    assert sorted(rows.index) == sorted(str(p) for p in src.glob("*.jpg"))  # every image once
    assert rows.loc[str(poison), "error"].startswith(f"WorkerDied: the worker died {MAX_DEATHS} times")
    assert rows.drop(str(poison)).error.isna().all()
    assert kills == [f"attempt {a}: None" for a in range(1, CAREFUL_AFTER + 1)] + [
        f"attempt {a}: {poison}" for a in range(CAREFUL_AFTER + 1, CAREFUL_AFTER + 1 + MAX_DEATHS)]
    assert summary["failed_images"] == 1 and summary["images"] == 7
    assert not list((out / "_attempts").glob("*.json"))
