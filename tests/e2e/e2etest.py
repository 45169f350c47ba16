"""Helpers for the end-to-end tests (imported as `e2etest`): data in MinIO, DetectionJobs, watching."""

from __future__ import annotations

import io
import json
import os
import random
import selectors
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from harness.binaries import binary

# The smallest torchvision detector, with seeded random weights (no download): what the e2e runs.
FAST_MODEL = "fasterrcnn_mobilenet_v3_large_320_fpn"
# Bad files that must each become one error row (name -> bytes).
CORRUPT_NAME_PREFIX = "bad-"


def voc_sized_jpeg(seed: int) -> bytes:
    """A 500x375 JPEG (the size of a Pascal VOC image) with a few coloured boxes on noise."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    img = Image.effect_noise((500, 375), 40 + seed % 30).convert("RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x0, y0 = rng.randrange(0, 400), rng.randrange(0, 300)
        box = (x0, y0, x0 + rng.randrange(40, 100), y0 + rng.randrange(40, 75))
        draw.rectangle(box, fill=tuple(rng.randrange(256) for _ in range(3)))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=85)
    return out.getvalue()


def corrupt_files() -> dict[str, bytes]:
    """Four files with image names that are not images: each must become an error row."""
    good = voc_sized_jpeg(10_000)
    return {
        f"{CORRUPT_NAME_PREFIX}truncated.jpg": good[: len(good) // 3],
        f"{CORRUPT_NAME_PREFIX}empty.jpg": b"",
        f"{CORRUPT_NAME_PREFIX}text.jpg": b"this is not a JPEG\n" * 20,
        f"{CORRUPT_NAME_PREFIX}garbage.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
    }


def stage_images(s3: Any, prefix: str, good: int, bad: bool = True) -> list[str]:
    """Upload ``good`` JPEGs (and the corrupt files) under ``prefix`` in the session bucket.

    Returns the object keys (bucket-relative), sorted.
    """
    fs = s3.filesystem()
    files = {f"img-{i:04d}.jpg": voc_sized_jpeg(i) for i in range(good)}
    if bad:
        files.update(corrupt_files())
    keys = []
    for name, data in files.items():
        key = f"{prefix.strip('/')}/{name}"
        with fs.open_output_stream(f"{s3.bucket}/{key}") as f:
            f.write(data)
        keys.append(key)
    return sorted(keys)


def stage_coco(s3: Any, key: str, image_keys: list[str]) -> str:
    """A COCO instances JSON at ``key``: one ``person`` box per image (what a model finds there
    does not matter; the job's evaluation of it does). Returns its URI."""
    doc = {"images": [{"id": i, "file_name": k.rsplit("/", 1)[1], "width": 500, "height": 375}
                      for i, k in enumerate(image_keys)],
           "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [40, 30, 200, 250],
                            "area": 50000.0, "iscrowd": 0} for i in range(len(image_keys))],
           "categories": [{"id": 1, "name": "person"}]}
    with s3.filesystem().open_output_stream(f"{s3.bucket}/{key}") as f:
        f.write(json.dumps(doc).encode())
    return s3.uri(key)


def detectionjob(name: str, namespace: str, image: str, input_uri: str, output_uri: str,
                 secret: str | None = "s3-creds", **spec: Any) -> dict[str, Any]:
    """A DetectionJob sized for the 2-core test node: head 400m + one 1-CPU worker + KubeRay's
    500m submitter + the operator's 50m fit its 2 allocatable CPUs. No GPU."""
    where: dict[str, Any] = {"secretRef": {"name": secret}} if secret else {}
    body: dict[str, Any] = {
        "apiVersion": "detectionjob.dev/v1alpha1",
        "kind": "DetectionJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "input": {"uri": input_uri, **where},
            "output": {"uri": output_uri, "samples": 4, **where},
            "model": {"name": FAST_MODEL, "weights": "none"},
            "batchSize": 4,
            "workers": {"replicas": 1, "gpusPerWorker": 0, "cpusPerWorker": 1, "memory": "3Gi"},
            "head": {"cpus": "400m", "memory": "2Gi"},
            "image": image,
            "ttlSecondsAfterFinished": 0,
        },
    }
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(body["spec"].get(key), dict):
            body["spec"][key].update(value)
        else:
            body["spec"][key] = value
    return body


def credentials_secret(s3: Any, namespace: str, name: str = "s3-creds") -> str:
    """The S3 credentials Secret as YAML (the job reads it through envFrom)."""
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "stringData": {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key,
                       "AWS_ENDPOINT_URL": s3.endpoint_url, "AWS_REGION": s3.region},
    })


@dataclass
class Watch:
    """What ``kubectl get dj`` showed, row by row, while waiting."""

    rows: list[dict[str, str]] = field(default_factory=list)

    @property
    def progress_values(self) -> list[str]:
        seen: list[str] = []
        for row in self.rows:
            value = row.get("PROGRESS", "")
            if value and value != "<none>" and (not seen or seen[-1] != value):
                seen.append(value)
        return seen

    @property
    def phases(self) -> list[str]:
        seen: list[str] = []
        for row in self.rows:
            if not seen or seen[-1] != row.get("PHASE"):
                seen.append(row.get("PHASE", ""))
        return seen


def get_dj_row(platform: Any, name: str) -> dict[str, str]:
    """One row of ``kubectl get dj NAME -o wide`` as {COLUMN: value} (the table a user reads)."""
    out = platform.kubectl("get", "dj", name, "-n", platform.namespace, "-o", "wide").stdout
    header, row = out.splitlines()[:2]
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    names = header.split()
    cells = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return dict(zip(names, cells, strict=True))


#: What the tests follow while a DetectionJob runs: the PHASE and PROGRESS columns of ``kubectl get
#: dj`` (the CRD's printer columns) and the Progressing condition, as kubectl's jsonpath prints them.
FOLLOWED = {
    "PHASE": "{.status.phase}",
    "PROGRESS": "{.status.progress.summary}",
    "PROGRESSING": '{.status.conditions[?(@.type=="Progressing")].reason}',
    "PROGRESSING_STATUS": '{.status.conditions[?(@.type=="Progressing")].status}',
    "PROGRESSING_MESSAGE": '{.status.conditions[?(@.type=="Progressing")].message}',
}


def _watch_rows(platform: Any, name: str, deadline: float) -> Iterator[dict[str, str]]:
    """``kubectl get dj NAME --watch``: the object as it is, then after every change, one row each,
    until the deadline or the watch ends. One streaming kubectl, not a poll: no change is missed
    and nothing runs while nothing changes (a kubectl a second costs ~0.2 of a core here)."""
    template = '{"|"}'.join(FOLLOWED.values()) + '{"\\n"}'  # kubectl turns tabs into spaces
    argv = [str(binary("kubectl")), f"--kubeconfig={platform.kube.kubeconfig}", "get", "dj", name,
            "-n", platform.namespace, "--watch", "-o", f"jsonpath={template}"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    pending = b""
    try:
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(timeout=min(left, 5.0)):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:  # the watch ended (the server closes long watches): the caller starts another
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                cells = line.decode().split("|", len(FOLLOWED) - 1)  # the message, last, may hold a |
                yield dict(zip(FOLLOWED, cells + [""] * (len(FOLLOWED) - len(cells)), strict=True))
    finally:
        selector.close()
        proc.kill()
        proc.wait()
        proc.stdout.close()


def follow(platform: Any, name: str, until: Callable[[dict[str, str]], bool], what: str, timeout: float,
           watch: Watch | None = None) -> dict[str, str]:
    """Follow DetectionJob ``name`` (:data:`FOLLOWED`) until a row satisfies ``until``; return it."""
    watch = watch if watch is not None else Watch()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for row in _watch_rows(platform, name, deadline):
            watch.rows.append(row)
            if until(row):
                return row
        time.sleep(1)  # the watch ended (or kubectl failed at once): start another, not in a busy loop
    raise AssertionError(
        f"DetectionJob {name}: no {what} after {timeout:.0f}s; phases seen {watch.phases}; progress "
        f"seen {watch.progress_values}; last row {watch.rows[-1:]}\n{describe(platform, name)}")


def wait_phase(platform: Any, name: str, phases: tuple[str, ...], timeout: float,
               watch: Watch | None = None) -> dict[str, Any]:
    """Follow the DetectionJob until its phase is one of ``phases``; return the DetectionJob."""
    follow(platform, name, lambda row: row["PHASE"] in phases, f"phase in {phases}", timeout, watch)
    return get_dj(platform, name)


def get_dj(platform: Any, name: str) -> dict[str, Any]:
    return json.loads(platform.kubectl("get", "dj", name, "-n", platform.namespace,
                                       "-o", "json").stdout)


def events(platform: Any, name: str) -> list[dict[str, Any]]:
    """The Events about DetectionJob ``name``, oldest first."""
    out = platform.kubectl("get", "events", "-n", platform.namespace, "-o", "json",
                           "--field-selector", f"involvedObject.kind=DetectionJob,"
                                               f"involvedObject.name={name}").stdout
    items = json.loads(out)["items"]
    return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


def describe(platform: Any, name: str) -> str:
    """Everything a user would look at when a job does not do what it should."""
    ns = platform.namespace
    parts = []
    for args in (("get", "dj", name, "-o", "yaml"), ("get", "rayjob,raycluster,pods,jobs", "-o", "wide"),
                 ("get", "events", "--sort-by=.lastTimestamp")):
        proc = platform.kubectl(*args, "-n", ns, check=False)
        parts.append(f"$ kubectl {' '.join(args)}\n{proc.stdout}{proc.stderr}")
    got = platform.kubectl("get", "dj", name, "-n", ns, "-o", "jsonpath={.status.rayJobName}", check=False)
    if got.returncode == 0 and got.stdout:  # the job's own words: its submitter's log
        args = ("logs", f"job/{got.stdout}", "--tail=80")
        proc = platform.kubectl(*args, "-n", ns, check=False)
        parts.append(f"$ kubectl {' '.join(args)}\n{proc.stdout}{proc.stderr}")
    return "\n".join(parts)


def timeline(platform: Any, since: str | None = None) -> str:
    """Every Event in the jobs' namespace as ``+seconds kind/name reason``, oldest first.

    ``since`` (an RFC 3339 time, e.g. a DetectionJob's creationTimestamp) is time zero; without it,
    the oldest Event. Printed by the e2e tests so that a slow run shows where its time went.
    """
    from datetime import datetime

    out = platform.kubectl("get", "events", "-n", platform.namespace, "-o", "json").stdout

    def when(event: dict[str, Any]) -> str:
        return (event.get("eventTime") or event.get("lastTimestamp")
                or event["metadata"]["creationTimestamp"])

    items = sorted(json.loads(out)["items"], key=when)
    if not items:
        return "(no events)"

    def parse(value: str) -> datetime:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))

    zero = parse(since or when(items[0]))
    lines = []
    for e in items:
        obj = e["involvedObject"]
        t = (parse(when(e)) - zero).total_seconds()
        lines.append(f"{t:+7.1f}s {obj['kind']}/{obj['name']} {e['reason']}: {e.get('message', '')[:100]}")
    return "\n".join(lines)
