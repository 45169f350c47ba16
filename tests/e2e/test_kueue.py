"""Two DetectionJobs, one Kueue quota: the second is Pending/Queued until the first finishes.

Uses the ``kueue`` fixture bound to the platform's cluster (``harness.fixtures.start_component``
against ``platform.kube``). The ClusterQueue's nominal quota is exactly what Kueue 0.17 charges one
job's RayJob: head (400m, 2Gi) + one worker (1 CPU, 3Gi) + KubeRay's submitter Pod (K8sJobMode,
our ``submitterPodTemplate``: 500m, 512Mi) = 1.9 CPUs, 5.5Gi. No GPU is requested.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import yaml
from detectionjob_operator.spec import parse
from detectionjob_operator.translate import to_rayjob
from e2etest import credentials_secret, describe, detectionjob, get_dj, stage_images, wait_phase
from harness.kueue import Kueue, podset_requests, queue_objects
from harness.waiting import wait_for

QUEUE = "detection"
CLUSTER_QUEUE = "e2e-one-job"
JOB_TIMEOUT = 900  # seconds, per job, on the 2-core node
GiB = 1024**3


def _rayjob(platform: Any, name: str) -> dict[str, Any] | None:
    proc = platform.kubectl("get", "rayjob", name, "-n", platform.namespace, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def _status(platform: Any, name: str) -> tuple[str, str]:
    status = get_dj(platform, name).get("status") or {}
    return status.get("phase", ""), status.get("reason", "")


def test_second_detectionjob_queued_until_first_finishes(platform, kueue: Kueue) -> None:
    s3, ns = platform.s3, platform.namespace
    stage_images(s3, "kueue/in", 16, bad=False)
    platform.kubectl("apply", "-f", "-", input=credentials_secret(s3, ns))
    first, second = "queued-first", "queued-second"
    docs = {name: detectionjob(name, ns, platform.worker_image, s3.uri("kueue/in/"),
                               s3.uri(f"kueue/{name}/"), queueName=QUEUE, output={"samples": 0})
            for name in (first, second)}
    quota = podset_requests(to_rayjob(parse(docs[first])))
    assert quota == {"cpu": Decimal("1.9"), "memory": Decimal(5.5 * GiB)}, quota
    queues = queue_objects(CLUSTER_QUEUE, QUEUE, ns, quota)
    kueue.kubectl_apply(queues)
    try:
        platform.kubectl("apply", "-f", "-", input=yaml.safe_dump(docs[first]))
        # Kueue admitted the first (its RayJob is unsuspended) before the second exists.
        wait_for(f"{first}: RayJob admitted by Kueue",
                 lambda: (rj := _rayjob(platform, first)) and not rj["spec"].get("suspend"),
                 timeout=120, interval=1)
        platform.kubectl("apply", "-f", "-", input=yaml.safe_dump(docs[second]))
        wait_for(f"{second}: Pending/Queued", lambda: _status(platform, second) == ("Pending", "Queued"),
                 timeout=120, interval=1)

        # Until the first job's RayJob has finished, the second stays Pending/Queued. The second is
        # read first: if it has left the queue, the first had finished before that read.
        samples: list[tuple[str, str, str]] = []
        deadline = time.monotonic() + JOB_TIMEOUT
        while True:
            phase_b, reason_b = _status(platform, second)
            rj = _rayjob(platform, first)
            deployment = ((rj or {}).get("status") or {}).get("jobDeploymentStatus", "")
            phase_a, _ = _status(platform, first)
            samples.append((phase_a, phase_b, reason_b))
            if rj is not None and deployment not in ("Complete", "Failed"):
                assert (phase_b, reason_b) == ("Pending", "Queued"), \
                    (samples[-5:], describe(platform, second))
                assert not rj["spec"].get("suspend")
            if phase_a in ("Succeeded", "Failed"):
                break
            assert time.monotonic() < deadline, (samples[-5:], describe(platform, first))
            time.sleep(2)  # three kubectl calls a round: ~0.2 of a core at one round a second
        assert phase_a == "Succeeded", describe(platform, first)
        assert ("Running", "Pending", "Queued") in samples, f"never saw {first} run while {second} waited"
        print(f"{first}: Succeeded; {second} stayed Queued for {len(samples)} samples")

        done = wait_phase(platform, second, ("Succeeded", "Failed"), JOB_TIMEOUT)
        assert done["status"]["phase"] == "Succeeded", describe(platform, second)
    finally:
        for name in (first, second):
            platform.kubectl("delete", "dj", name, "-n", ns, "--timeout=120s", check=False)
        for obj in reversed(queues):
            where = ["-n", obj["metadata"]["namespace"]] if "namespace" in obj["metadata"] else []
            platform.kubectl("delete", f"{obj['kind'].lower()}.kueue.x-k8s.io", obj["metadata"]["name"],
                             *where, "--ignore-not-found", "--timeout=60s", check=False)
