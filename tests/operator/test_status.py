"""RayJob status -> DetectionJob status (pure), and the progress reporter's pure parts."""

from __future__ import annotations

import pytest
from detectionjob_operator import status as st
from detectionjob_operator.controller import controller_owner

from inference import status_reporter as progress


def rayjob(deployment="", job="", suspend=False, **status):
    return {"metadata": {"name": "rj"}, "spec": {"suspend": suspend},
            "status": {"jobDeploymentStatus": deployment, "jobStatus": job,
                       "rayClusterName": "rj-abcde", **status}}


@pytest.mark.parametrize(("deployment", "job", "phase", "reason"), [
    ("", "", "Pending", "RayJobCreated"),
    ("Initializing", "", "Pending", "ClusterStarting"),
    ("Running", "PENDING", "Pending", "JobPending"),
    ("Running", "", "Pending", "JobPending"),
    ("Running", "RUNNING", "Running", "JobRunning"),
    ("Running", "SUCCEEDED", "Running", "JobFinishing"),
    ("Retrying", "FAILED", "Pending", "Retrying"),
    ("Complete", "SUCCEEDED", "Succeeded", "JobSucceeded"),
    ("Complete", "STOPPED", "Failed", "JobStopped"),
    ("Complete", "FAILED", "Failed", "JobFailed"),
    ("Failed", "FAILED", "Failed", "RayJobFailed"),
    ("ValidationFailed", "", "Failed", "ValidationFailed"),
    ("Suspending", "RUNNING", "Suspended", "Suspended"),
    ("Suspended", "", "Suspended", "Suspended"),
])
def test_phase_mapping(deployment, job, phase, reason):
    obs = st.observe(rayjob(deployment, job), user_suspend=False, queue=None)
    assert (obs.phase, obs.reason) == (phase, reason)
    assert obs.message


def test_kuberay_reason_and_message_win():
    obs = st.observe(rayjob("Failed", "RUNNING", reason="DeadlineExceeded",
                            message="activeDeadlineSeconds 10 passed"),
                     user_suspend=False, queue=None)
    assert (obs.phase, obs.reason, obs.message) == (
        "Failed", "DeadlineExceeded", "activeDeadlineSeconds 10 passed")


def test_a_failed_job_says_its_own_verdict_not_its_whole_log():
    log = ("Job entrypoint command failed with exit code 1, last available logs (truncated to 20,000 "
           "chars):\nRunning entrypoint for job j: python -m inference run --args-json-env X\n"
           "[detectionjob] 16/16 images (100.0%), 4 failed\n"
           "detectionjob run: failed: 4 of 16 images failed (25.0%), more than --max-failed-fraction "
           "0.1; for example: ValueError: empty file (0 bytes) (every result is written)\n")
    obs = st.observe(rayjob("Failed", "FAILED", reason="AppFailed", message=log),
                     user_suspend=False, queue=None)
    assert (obs.phase, obs.reason) == ("Failed", "AppFailed")
    assert obs.message.startswith("detectionjob run: failed: 4 of 16 images failed (25.0%)")
    assert "\n" not in obs.message
    other = "Job entrypoint command failed with exit code 1: Traceback ..."
    assert st.observe(rayjob("Failed", "FAILED", reason="AppFailed", message=other),
                      user_suspend=False, queue=None).message == other


def test_queued_in_kueue_is_pending():
    for deployment in ("", "Initializing", "Suspended"):
        obs = st.observe(rayjob(deployment, suspend=True), user_suspend=False, queue="gpu")
        assert (obs.phase, obs.reason) == ("Pending", "Queued")
    obs = st.observe(rayjob("Suspended", suspend=True), user_suspend=True, queue="gpu")
    assert obs.phase == "Suspended"


def test_conditions_move_only_on_flips():
    running = st.Observation("Running", "JobRunning", "runs")
    first = st.conditions(None, running, created=True, generation=1, timestamp="T1")
    by_type = {c["type"]: c for c in first}
    assert set(by_type) == set(st.CONDITION_TYPES)
    assert by_type["Running"]["status"] == "True" and by_type["Failed"]["status"] == "False"
    assert by_type["RayJobCreated"]["status"] == "True"
    assert all(c["observedGeneration"] == 1 for c in first)
    again = st.conditions(first, running, created=True, generation=1, timestamp="T2")
    assert all(c["lastTransitionTime"] == "T1" for c in again)
    done = st.conditions(again, st.Observation("Succeeded", "JobSucceeded", "ok"), created=True,
                         generation=1, timestamp="T3")
    times = {c["type"]: c["lastTransitionTime"] for c in done}
    assert times == {"RayJobCreated": "T1", "Running": "T3", "Progressing": "T3", "Evaluated": "T1",
                     "Suspended": "T1", "Succeeded": "T3", "Failed": "T1"}


def test_progressing_is_false_while_the_job_has_a_stalled_batch():
    running = st.Observation("Running", "JobRunning", "runs")
    first = st.conditions(None, running, created=True, generation=1, timestamp="T1")
    assert {c["type"]: (c["status"], c["reason"]) for c in first}["Progressing"] == ("True", "Detecting")
    message = "stalled: a detector (pid 7, node abc) has had no result for 130 s"
    patch = st.patch_for({"conditions": first, "progress": {"done": 3, "stalled": message}},
                         running, created=True, generation=1, timestamp="T2")
    progressing = {c["type"]: c for c in patch["conditions"]}["Progressing"]
    assert (progressing["status"], progressing["reason"], progressing["message"]) == (
        "False", "Stalled", message)
    assert progressing["lastTransitionTime"] == "T2"
    recovered = st.patch_for({"conditions": patch["conditions"], "progress": {"done": 9}},
                             running, created=True, generation=1, timestamp="T3")
    progressing = {c["type"]: c for c in recovered["conditions"]}["Progressing"]
    assert (progressing["status"], progressing["reason"], progressing["lastTransitionTime"]) == (
        "True", "Detecting", "T3")
    # Not running: not progressing, whatever the last progress said.
    done = st.patch_for({"conditions": recovered["conditions"], "progress": {"stalled": message}},
                        st.Observation("Succeeded", "JobSucceeded", "ok"), created=True, generation=1)
    assert {c["type"]: c["reason"] for c in done["conditions"]}["Progressing"] == "Succeeded"


def test_invalid_spec_never_created():
    obs = st.Observation("Failed", st.INVALID_SPEC, "spec.x: bad")
    conds = {c["type"]: c for c in st.conditions(None, obs, created=False, generation=1,
                                                   timestamp="T")}
    assert conds["RayJobCreated"]["status"] == "False"
    assert conds["RayJobCreated"]["reason"] == st.INVALID_SPEC
    assert conds["Failed"]["status"] == "True"


def test_patch_and_changed():
    obs = st.Observation("Running", "JobRunning", "runs")
    patch = st.patch_for({}, obs, created=True, generation=2, extra={"jobId": "j"},
                         timestamp="T")
    assert patch["phase"] == "Running" and patch["observedGeneration"] == 2
    assert patch["jobId"] == "j" and "progress" not in patch
    current = {**patch, "progress": {"done": 1}}
    later = st.patch_for(current, obs, created=True, generation=2, extra={"jobId": "j"},
                         timestamp="T-later")
    assert not st.changed(current, later)
    assert st.changed(current, {**later, "message": "other"})


def test_rayjob_fields_and_completion_time():
    rj = rayjob("Complete", "SUCCEEDED", dashboardURL="rj-head-svc:8265", jobId="rj-x",
                startTime="2026-01-01T00:00:00Z", endTime="2026-01-01T01:00:00Z")
    fields = st.rayjob_fields(rj, "Succeeded")
    assert fields == {"rayJobName": "rj", "rayClusterName": "rj-abcde",
                      "dashboardURL": "rj-head-svc:8265", "jobId": "rj-x",
                      "jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Complete",
                      "startTime": "2026-01-01T00:00:00Z",
                      "completionTime": "2026-01-01T01:00:00Z"}
    kept = st.rayjob_fields(rj, "Succeeded", {"completionTime": "earlier"})
    assert kept["completionTime"] == "earlier"
    assert st.rayjob_fields(rayjob("Running", "RUNNING"), "Running")["completionTime"] is None


def test_final_reasons():
    assert st.is_final({"phase": "Failed", "reason": st.RAYJOB_DELETED})
    assert not st.is_final({"phase": "Failed", "reason": "AppFailed"})
    assert not st.is_final(None)


def test_controller_owner():
    ref = {"apiVersion": "detectionjob.dev/v1alpha1", "kind": "DetectionJob", "name": "a",
           "uid": "u", "controller": True}
    assert controller_owner({"metadata": {"ownerReferences": [ref]}}) == ref
    assert controller_owner({"metadata": {"ownerReferences": [{**ref, "controller": False}]}}) \
        is None
    assert controller_owner({"metadata": {"ownerReferences": [{**ref, "kind": "Other"}]}}) is None
    assert controller_owner({"metadata": {}}) is None


def test_progress_summary_and_patch():
    assert progress.summary(50, 200) == "50/200 (25%)"
    assert progress.summary(3, 0) == "3/?"
    assert progress.summary(7, 5) == "7/5 (100%)"
    patch = progress.progress_patch(1, 2, 0)["status"]["progress"]
    assert {k: patch[k] for k in ("done", "total", "failed", "summary")} == {
        "done": 1, "total": 2, "failed": 0, "summary": "1/2 (50%)"}


@pytest.mark.parametrize("target", ["", "name", "/name", "ns/", "ns"])
def test_reporter_target_must_be_namespace_slash_name(target):
    with pytest.raises(ValueError, match="namespace/name"):
        progress.StatusReporter(target)


def test_reporter_never_raises_without_a_cluster(tmp_path, monkeypatch, caplog):
    # A real client against a kubeconfig pointing at a closed port: every call fails for real.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("""
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:9"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
""")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    reporter = progress.StatusReporter("ns/name", interval=0, timeout=1)
    for i in range(3):
        reporter(i, 10, 0)
    reporter.close()
    warnings = [r for r in caplog.records if "not reported" in r.getMessage()]
    assert len(warnings) == 1  # logged once per kind of error, not per call


def pod(name, waiting=None, message=None, unschedulable=None, deleting=False, container="ray-worker"):
    status: dict = {"phase": "Pending"}
    if waiting:
        state = {"waiting": {"reason": waiting, **({"message": message} if message else {})}}
        status["containerStatuses"] = [{"name": container, "state": state}]
    if unschedulable:
        status["conditions"] = [{"type": "PodScheduled", "status": "False",
                                 "reason": "Unschedulable", "message": unschedulable}]
    meta: dict = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": status}


@pytest.mark.parametrize("reason", st.STUCK_CONTAINER_REASONS)
def test_pod_problem_names_pod_container_and_kubelet_message(reason):
    pods = [pod("b-head", waiting="ContainerCreating"),
            pod("a-worker", waiting=reason, message=f'kubelet says {reason}')]
    obs = st.pod_problem(pods)
    assert obs == st.Observation(
        "Pending", reason, f"pod a-worker, container ray-worker: kubelet says {reason}")


def test_pod_problem_unschedulable_and_healthy_and_deleted_pods():
    assert st.pod_problem([pod("h"), pod("w", waiting="ContainerCreating")]) is None
    assert st.pod_problem([]) is None
    assert st.pod_problem([pod("w", waiting="ErrImagePull", deleting=True)]) is None
    obs = st.pod_problem([pod("w", unschedulable="0/1 nodes are available: 1 Insufficient cpu.")])
    assert (obs.phase, obs.reason) == ("Pending", "Unschedulable")
    assert obs.message == "pod w cannot be scheduled: 0/1 nodes are available: 1 Insufficient cpu."
    # Without a message the waiting reason itself is the detail.
    obs = st.pod_problem([pod("w", waiting="ImagePullBackOff")])
    assert obs.message == "pod w, container ray-worker: ImagePullBackOff"


def test_a_container_that_cannot_start_wins_over_an_unschedulable_pod():
    """Seen on the test node: a wrong image on the head and no CPU left for the worker."""
    pods = [pod("job-a-worker", unschedulable="0/1 nodes are available: 1 Insufficient cpu."),
            pod("job-b-head", waiting="ImagePullBackOff", message='Back-off pulling image "x"')]
    obs = st.pod_problem(pods)
    assert (obs.reason, obs.message) == (
        "ImagePullBackOff", 'pod job-b-head, container ray-worker: Back-off pulling image "x"')


@pytest.mark.parametrize(("reason", "verdict"), [
    ("NoImages", "detectionjob run: error: --input: no images under s3://imgs/typo matching jpg, png "
                 "(no files at all; folders named _* or .* are not listed unless --list-hidden). "
                 "--allow-empty makes this a success"),
    ("OutputNotWritable", "detectionjob run: error: --output: s3://results/x: not writable: AWS Error "
                          "ACCESS_DENIED during PutObject operation: Access Denied"),
    ("InputNotReadable", "detectionjob run: error: --input: s3://imgs/in: cannot be listed: AWS Error "
                         "NO_SUCH_BUCKET during ListObjectsV2 operation"),
    ("CredentialsNotFound", "detectionjob run: error: --input: gs://imgs/in: no credentials found within "
                            "30 s (tried GOOGLE_APPLICATION_CREDENTIALS: unset, ...)"),
    ("StoreUnreachable", "detectionjob run: failed: s3://imgs: did not answer for 300 s (--store-wait); "
                         "last error: ... curlCode: 7, Could not connect to server (the shards finished "
                         "before are written; see _summary.json)"),
    ("EvaluationFailed", "detectionjob run: failed: --evaluate-annotations: s3://gt/x.json: cannot be "
                         "evaluated: --results and --annotations have no image in common ..."),
])
def test_a_job_that_cannot_start_work_says_why_as_the_reason(reason, verdict):
    """The job's own one-line error (built from inference.reasons, like this expectation) becomes
    the DetectionJob's reason and message, whichever way KubeRay reports the failure."""
    from inference.reasons import PHRASES

    assert PHRASES[reason] in verdict
    log = (f"Job entrypoint command failed with exit code 2, last available logs (truncated to 20,000 "
           f"chars):\nRunning entrypoint for job j: python -m inference run --args-json-env X\n{verdict}\n")
    for deployment, job in (("Failed", "FAILED"), ("Complete", "FAILED")):
        obs = st.observe(rayjob(deployment, job, reason="AppFailed", message=log),
                         user_suspend=False, queue=None)
        assert (obs.phase, obs.reason, obs.message) == ("Failed", reason, verdict)


def test_evaluated_follows_the_jobs_evaluation():
    running = st.Observation("Running", "JobRunning", "runs")
    first = {c["type"]: c for c in st.conditions(None, running, created=True, generation=1, timestamp="T")}
    assert (first["Evaluated"]["status"], first["Evaluated"]["reason"]) == ("False", "NotEvaluated")
    done = st.Observation("Succeeded", "JobSucceeded", "ok")
    patch = st.patch_for({"evaluation": {"map": 0.25, "map50": 0.5, "annotations": "s3://a/", "report": "r"}},
                         done, created=True, generation=1, timestamp="T2")
    cond = {c["type"]: c for c in patch["conditions"]}["Evaluated"]
    assert (cond["status"], cond["reason"], cond["message"]) == (
        "True", "Evaluated", "mAP 0.250, AP50 0.500 against s3://a/ (r)")
    failed = st.patch_for({"evaluation": {"error": "--evaluate-annotations: x: cannot be evaluated: y"}},
                          done, created=True, generation=1)
    cond = {c["type"]: c for c in failed["conditions"]}["Evaluated"]
    assert (cond["status"], cond["reason"]) == ("False", "EvaluationFailed")
    assert "cannot be evaluated" in cond["message"]


def test_a_job_with_nothing_to_do_succeeds_with_that_reason():
    from inference.status_reporter import finish_patch

    line = "nothing to do: no images under s3://imgs/2026-12-03 (--allow-empty)"
    patch = finish_patch({"status": "succeeded", "reason": "NothingToDo", "message": line, "images": 0})
    assert patch == {"progress": {"nothingToDo": line}}
    succeeded = st.observe(rayjob("Complete", "SUCCEEDED"), user_suspend=False, queue=None)
    assert st.told_by_the_job(succeeded, patch) == st.Observation("Succeeded", "NothingToDo", line)
    assert st.told_by_the_job(succeeded, {"progress": {"done": 3}}) == succeeded
    running = st.observe(rayjob("Running", "RUNNING"), user_suspend=False, queue=None)
    assert st.told_by_the_job(running, patch) == running
