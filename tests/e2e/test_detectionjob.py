"""A DetectionJob from `kubectl apply` to Parquet in S3, through real Pods from our own images."""

from __future__ import annotations

import json
import time

import pyarrow.parquet as pq
import pytest
import yaml
from e2etest import (
    CORRUPT_NAME_PREFIX,
    Watch,
    credentials_secret,
    describe,
    detectionjob,
    events,
    follow,
    get_dj_row,
    stage_coco,
    stage_images,
    timeline,
    wait_phase,
)
from harness.waiting import wait_for

GOOD, BAD = 60, 4  # 64 VOC-sized images, 4 of them corrupt
JOB_TIMEOUT = 900  # seconds; the job itself takes ~2-3 min on the 2-core node


def read_output(s3, prefix: str):
    """The job's Parquet (every part under ``prefix``), as one Arrow table, and the file names."""
    fs = s3.filesystem()
    from pyarrow import fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(f"{s3.bucket}/{prefix}", recursive=True))
    names = sorted(i.path.split(f"{s3.bucket}/{prefix}", 1)[1].lstrip("/") for i in infos
                   if i.type == pafs.FileType.File)
    parts = [n for n in names if n.endswith(".parquet") and not n.startswith(("_", "."))]
    table = pq.ParquetDataset([f"{s3.bucket}/{prefix}/{n}" for n in parts], filesystem=fs).read()
    return table, names


def test_detectionjob_apply_to_parquet(platform):
    """apply -> RayJob -> RayCluster -> Pods -> Succeeded; one row per image, progress seen."""
    s3, ns, name = platform.s3, platform.namespace, "voc-e2e"
    keys = stage_images(s3, "voc/in", GOOD)
    annotations = stage_coco(s3, "voc/instances.json", [k for k in keys if CORRUPT_NAME_PREFIX not in k])
    platform.kubectl("apply", "-f", "-", input=credentials_secret(s3, ns))
    dj = detectionjob(name, ns, platform.worker_image, s3.uri("voc/in/"), s3.uri("voc/out/"),
                      evaluation={"annotations": {"uri": annotations, "secretRef": {"name": "s3-creds"}}})
    started = time.monotonic()
    platform.kubectl("apply", "-f", "-", input=yaml.safe_dump(dj))

    watch = Watch()
    done = wait_phase(platform, name, ("Succeeded", "Failed"), JOB_TIMEOUT, watch)
    elapsed = time.monotonic() - started
    assert done["status"]["phase"] == "Succeeded", describe(platform, name)

    total = GOOD + BAD
    # kubectl get dj showed a value between 0 and total while running, and total/total at the end.
    progress = watch.progress_values
    print(f"{name}: Succeeded in {elapsed:.0f}s; phases {watch.phases}; progress {progress}")
    print(timeline(platform, done["metadata"]["creationTimestamp"]))
    assert get_dj_row(platform, name)["PROGRESS"].startswith(f"{total}/{total}"), progress
    midway = [p for p in progress if 0 < int(p.split("/")[0]) < total]
    assert midway, f"no progress value between 0 and {total} seen: {progress}"
    assert "Running" in watch.phases, watch.phases

    table, files = read_output(s3, "voc/out")
    rows = table.to_pylist()
    paths = [r["path"] for r in rows]
    assert len(rows) == total and len(set(paths)) == total, (len(rows), len(set(paths)))
    assert sorted(p.removeprefix(f"s3://{s3.bucket}/") for p in paths) == keys
    errors = {r["path"].rsplit("/", 1)[1] for r in rows if r["error"]}
    assert errors == {k.rsplit("/", 1)[1] for k in keys if CORRUPT_NAME_PREFIX in k}
    good = [r for r in rows if not r["error"]]
    assert all(r["width"] == 500 and r["height"] == 375 for r in good)
    assert all(len(r["boxes"]) == len(r["scores"]) == len(r["labels"]) for r in good)
    assert "_summary.json" in files
    summary = json.loads(s3.filesystem().open_input_file(f"{s3.bucket}/voc/out/_summary.json").read())
    print(f"{name}: summary {summary}")
    assert (summary["images"], summary["failed_images"]) == (total, BAD), summary
    samples = [f for f in files if f.startswith("_samples/") and f.endswith(".png")]
    assert len(samples) == 4, files

    # The job scored its results against the annotations (spec.evaluation): the MAP column.
    assert "_evaluation.json" in files and "_evaluation/pr_curves.png" in files, files
    report = json.loads(s3.filesystem().open_input_file(f"{s3.bucket}/voc/out/_evaluation.json").read())
    assert done["status"]["evaluation"]["map"] == pytest.approx(report["map"]) == summary["evaluation"]["map"]
    assert float(get_dj_row(platform, name)["MAP"]) == pytest.approx(report["map"], abs=1e-6)

    # Events tell the story: created, running, evaluated, succeeded.
    reasons = [e["reason"] for e in events(platform, name)]
    for expected in ("RayJobCreated", "JobRunning", "Evaluated", "JobSucceeded"):
        assert expected in reasons, reasons


def test_wrong_image_and_missing_secret_say_why(platform):
    """Pods that cannot start: the DetectionJob says why (Pending + the kubelet's reason), fast."""
    s3, ns = platform.s3, platform.namespace
    cases = {
        # An image that is not on the node and cannot be pulled.
        "wrong-image": ({"image": "detectionjob.local/no-such-image:1"},
                        ("ErrImagePull", "ImagePullBackOff"), "no-such-image"),
        # A credentials Secret that does not exist: the containers cannot be configured.
        "no-secret": ({"input": {"secretRef": {"name": "missing-creds"}},
                       "output": {"secretRef": {"name": "missing-creds"}}},
                      ("CreateContainerConfigError",), "missing-creds"),
    }
    for name, (spec, _, _) in cases.items():
        spec = dict(spec)
        image = spec.pop("image", platform.worker_image)
        dj = detectionjob(name, ns, image, s3.uri("none/in/"), s3.uri("none/out/"), **spec)
        platform.kubectl("apply", "-f", "-", input=yaml.safe_dump(dj))
    try:
        for name, (_, reasons, word) in cases.items():
            started = time.monotonic()

            wait_for(f"{name}: a Pending reason from its Pods",
                     lambda name=name, reasons=reasons: _reason(platform, name) in reasons,
                     timeout=180, interval=1)
            waited = time.monotonic() - started
            status = json.loads(platform.kubectl("get", "dj", name, "-n", ns, "-o", "json").stdout)
            status = status["status"]
            print(f"{name}: {status['reason']} after {waited:.0f}s: {status['message']}")
            assert status["phase"] == "Pending" and status["reason"] in reasons, status
            assert word in status["message"] and "pod " in status["message"], status
            assert get_dj_row(platform, name)["MESSAGE"], "kubectl get dj shows no message"
            assert any(e["reason"] in reasons for e in events(platform, name))
    finally:
        for name in cases:
            platform.kubectl("delete", "dj", name, "-n", ns, "--wait=false", check=False)


def _reason(platform, name: str) -> str:
    out = platform.kubectl("get", "dj", name, "-n", platform.namespace,
                           "-o", "jsonpath={.status.reason}").stdout
    return out.strip()


def _pods(platform, name: str, group: str) -> list[dict]:
    """The running Pods of DetectionJob ``name`` of one Ray node type ("head" or "worker")."""
    out = platform.kubectl("get", "pods", "-n", platform.namespace, "-o", "json", "-l",
                           f"detectionjob.dev/name={name},ray.io/node-type={group}").stdout
    return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]


def wait_midway(platform, name: str, total: int) -> str:
    """The PROGRESS column once it shows some but not all of ``total`` images done."""
    def midway(row: dict[str, str]) -> bool:
        value = row["PROGRESS"]
        return "/" in value and 0 < int(value.split("/")[0]) < total

    return follow(platform, name, midway, f"progress between 0 and {total}", JOB_TIMEOUT)["PROGRESS"]


def test_worker_pod_force_deleted_mid_job(platform):
    """A worker Pod dies mid-job: KubeRay replaces it, Ray retries, every image exactly once."""
    s3, ns, name = platform.s3, platform.namespace, "lose-worker"
    good = 128
    keys = stage_images(s3, "lose/in", good, bad=False)
    platform.kubectl("apply", "-f", "-", input=credentials_secret(s3, ns))
    # Shards of 16 on average: losing the worker costs the shard in flight, not the job so far.
    dj = detectionjob(name, ns, platform.worker_image, s3.uri("lose/in/"), s3.uri("lose/out/"),
                      output={"samples": 0, "shardSize": 16})
    platform.kubectl("apply", "-f", "-", input=yaml.safe_dump(dj))

    seen = wait_midway(platform, name, good)
    (victim,) = _pods(platform, name, "worker")
    platform.kubectl("delete", "pod", victim["metadata"]["name"], "-n", ns,
                     "--grace-period=0", "--force")
    print(f"{name}: deleted worker Pod {victim['metadata']['name']} at progress {seen}")
    replacement = wait_for("a new worker Pod", lambda: [
        p for p in _pods(platform, name, "worker")
        if p["metadata"]["uid"] != victim["metadata"]["uid"]], timeout=120, interval=1)

    done = wait_phase(platform, name, ("Succeeded", "Failed"), JOB_TIMEOUT)
    assert done["status"]["phase"] == "Succeeded", describe(platform, name)
    print(f"{name}: Succeeded; replacement worker {replacement[0]['metadata']['name']}")
    table, _ = read_output(s3, "lose/out")
    paths = table.column("path").to_pylist()
    assert len(paths) == good and len(set(paths)) == good, (len(paths), len(set(paths)))
    assert sorted(p.removeprefix(f"s3://{s3.bucket}/") for p in paths) == keys
    assert table.column("error").null_count == good, "an image became an error row"


def _parts(s3, prefix: str) -> dict[str, object]:
    """The part files under ``prefix``: name -> last-modified time."""
    from pyarrow import fs as pafs

    infos = s3.filesystem().get_file_info(pafs.FileSelector(f"{s3.bucket}/{prefix}", allow_not_found=True))
    return {i.base_name: i.mtime for i in infos if i.base_name.startswith("part-")}


def test_suspend_then_resume_detects_nothing_twice(platform):
    """spec.suspend mid-job deletes the Ray cluster; unsuspended with output.mode resume, the job
    skips every finished shard (their parts untouched) and detects only the rest."""
    s3, ns, name = platform.s3, platform.namespace, "suspend-resume"
    good = 96
    keys = stage_images(s3, "susp/in", good, bad=False)
    platform.kubectl("apply", "-f", "-", input=credentials_secret(s3, ns))
    dj = detectionjob(name, ns, platform.worker_image, s3.uri("susp/in/"), s3.uri("susp/out/"),
                      output={"samples": 0, "mode": "resume", "shardSize": 8})
    platform.kubectl("apply", "-f", "-", input=yaml.safe_dump(dj))
    wait_for(f"{name}: 3 parts written", lambda: len(_parts(s3, "susp/out")) >= 3, timeout=JOB_TIMEOUT,
             interval=0.5)
    platform.kubectl("patch", "dj", name, "-n", ns, "--type", "merge", "-p", '{"spec": {"suspend": true}}')
    wait_phase(platform, name, ("Suspended",), 180)
    def gone() -> bool:  # terminating Pods too: a worker in its grace period still writes parts
        out = platform.kubectl("get", "pods", "-n", ns, "-o", "name", "-l",
                               f"detectionjob.dev/name={name},ray.io/node-type").stdout
        return not out.strip()

    wait_for(f"{name}: no Ray Pods left", gone, timeout=300, interval=1)
    at_suspend = _parts(s3, "susp/out")
    done_rows = read_output(s3, "susp/out")[0].num_rows
    print(f"{name}: suspended with {len(at_suspend)} parts, {done_rows} of {good} images done")
    assert 0 < done_rows < good

    platform.kubectl("patch", "dj", name, "-n", ns, "--type", "merge", "-p", '{"spec": {"suspend": false}}')
    done = wait_phase(platform, name, ("Succeeded", "Failed"), JOB_TIMEOUT)
    assert done["status"]["phase"] == "Succeeded", describe(platform, name)
    table, _ = read_output(s3, "susp/out")
    paths = table.column("path").to_pylist()
    assert len(paths) == good and sorted(p.removeprefix(f"s3://{s3.bucket}/") for p in paths) == keys
    summary = json.loads(s3.filesystem().open_input_file(f"{s3.bucket}/susp/out/_summary.json").read())
    print(f"{name}: resumed run skipped {summary['skipped_existing']}, detected {summary['images']}")
    # The images done before the suspension were not detected again: counted, and their parts untouched.
    assert summary["skipped_existing"] == done_rows and summary["images"] == good - done_rows, summary
    after = _parts(s3, "susp/out")
    assert all(after[part] == mtime for part, mtime in at_suspend.items()), "a finished part was rewritten"


def _detectors_in(pod: dict) -> list[int]:
    """Host pids of the detector actors (Ray titles them after the stage) in ``pod``: the test
    node's containers are this machine's processes, in the Pod's cgroup (cgroupfs:
    ``/kubepods/<qos>/pod<uid>/<container>``)."""
    from pathlib import Path

    mark = f"pod{pod['metadata']['uid']}"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if cmd.startswith("ray::") and "ShardStage" in cmd and mark in (entry / "cgroup").read_text():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_a_stopped_detector_stalls_then_the_job_recovers(platform):
    """SIGSTOP the detector in the worker Pod mid-job (a GPU stuck in a kernel looks the same): the
    DetectionJob shows Progressing=False (Stalled) with an Event, the watchdog ends the process,
    Ray restarts it, the condition clears, and the job ends Succeeded with every image once."""
    import contextlib
    import os
    import signal

    s3, ns, name = platform.s3, platform.namespace, "stall"
    good = 96
    keys = stage_images(s3, "stall/in", good, bad=False)
    platform.kubectl("apply", "-f", "-", input=credentials_secret(s3, ns))
    dj = detectionjob(name, ns, platform.worker_image, s3.uri("stall/in/"), s3.uri("stall/out/"),
                      output={"samples": 0, "shardSize": 16}, batchTimeoutSeconds=45)
    platform.kubectl("apply", "-f", "-", input=yaml.safe_dump(dj))

    seen = wait_midway(platform, name, good)
    (worker,) = _pods(platform, name, "worker")
    stopped = wait_for("the detector process in the worker Pod", lambda: _detectors_in(worker), timeout=30)
    try:
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        print(f"{name}: stopped detector(s) {stopped} at progress {seen}")

        row = follow(platform, name, lambda row: row["PROGRESSING"] == "Stalled",
                     "Progressing=False, reason Stalled", 300)
        stall = {"status": row["PROGRESSING_STATUS"], "message": row["PROGRESSING_MESSAGE"]}
        assert stall["status"] == "False" and "stalled: a detector" in stall["message"], stall
        print(f"{name}: {stall['message']}")
        done = wait_phase(platform, name, ("Succeeded", "Failed"), JOB_TIMEOUT)
    finally:
        for pid in stopped:  # gone once the watchdog ended them; continued if not
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert done["status"]["phase"] == "Succeeded", describe(platform, name)
    reasons = [e["reason"] for e in events(platform, name)]
    assert "Stalled" in reasons and "Recovered" in reasons, reasons
    assert "stalled" not in done["status"]["progress"]
    table, _ = read_output(s3, "stall/out")
    with s3.filesystem().open_input_file(f"{s3.bucket}/stall/out/_summary.json") as f:
        summary = json.loads(f.read())
    paths = table.column("path").to_pylist()
    assert len(paths) == good and len(set(paths)) == good, (len(paths), len(set(paths)))
    assert sorted(p.removeprefix(f"s3://{s3.bucket}/") for p in paths) == keys
    assert table.column("error").null_count == good, "an image became an error row"
    assert summary["stalls_recovered"] >= 1 and summary["timed_out_images"] == 0


def test_a_job_with_no_images_or_an_unwritable_output_says_why(platform):
    """The job's checks before any work, as the DetectionJob's reason and an Event naming the URI:
    an empty prefix (Failed, NoImages), the same with spec.input.allowEmpty (Succeeded,
    NothingToDo), an output bucket that does not exist (Failed, OutputNotWritable)."""
    s3, ns = platform.s3, platform.namespace
    platform.kubectl("apply", "-f", "-", input=credentials_secret(s3, ns))
    stage_images(s3, "few/in", 2, bad=False)
    cases = [
        ("no-images", s3.uri("empty/in/"), s3.uri("empty/out/"), {}, "Failed", "NoImages",
         f"no images under {s3.uri('empty/in')}"),
        ("nothing-to-do", s3.uri("empty/in/"), s3.uri("empty/out2/"), {"input": {"allowEmpty": True}},
         "Succeeded", "NothingToDo", f"nothing to do: no images under {s3.uri('empty/in')}"),
        ("not-writable", s3.uri("few/in/"), "s3://no-such-bucket-e2e/out/", {}, "Failed",
         "OutputNotWritable", "--output: s3://no-such-bucket-e2e/out: not writable: "),
    ]
    for name, input_uri, output_uri, extra, phase, reason, words in cases:
        dj = detectionjob(name, ns, platform.worker_image, input_uri, output_uri, **extra)
        platform.kubectl("apply", "-f", "-", input=yaml.safe_dump(dj))
        done = wait_phase(platform, name, ("Succeeded", "Failed"), JOB_TIMEOUT)
        status = done["status"]
        assert (status["phase"], status["reason"]) == (phase, reason), describe(platform, name)
        assert words in status["message"], status["message"]
        told = [e for e in events(platform, name) if e["reason"] == reason]
        assert told and words in told[-1]["message"], [e["reason"] for e in events(platform, name)]
        print(f"{name}: {phase} ({reason}) {status['message']}")
