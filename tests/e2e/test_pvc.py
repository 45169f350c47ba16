"""A DetectionJob reading and writing PersistentVolumeClaims (local PersistentVolumes on the node)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import yaml
from e2etest import corrupt_files, describe, detectionjob, voc_sized_jpeg, wait_phase

GOOD = 12


def local_pv(name: str, path: Path, node: str, storage_class: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": storage_class,
            "local": {"path": str(path)},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
        },
    }


def claim(name: str, namespace: str, volume: str, storage_class: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": storage_class,
                 "volumeName": volume, "resources": {"requests": {"storage": "1Gi"}}},
    }


def test_pvc_input_and_output(platform):
    """Images on one claim (a sub-path), results on another: one row per image, errors included."""
    ns, name, sc = platform.namespace, "pvc-e2e", "e2e-local"
    root = Path(tempfile.mkdtemp(prefix="detectionjob-e2e-pv-"))
    images, results = root / "images", root / "results"
    (images / "set-a").mkdir(parents=True)
    results.mkdir()
    for i in range(GOOD):
        (images / "set-a" / f"img-{i:03d}.jpg").write_bytes(voc_sized_jpeg(i))
    for fname, data in corrupt_files().items():
        (images / "set-a" / fname).write_bytes(data)
    for path in (root, images, images / "set-a", results):
        path.chmod(0o777)  # the Pods run as uid 1000; a local volume is used as it is on the host
    docs = [
        local_pv(f"{ns}-images", images, platform.node.name, sc),
        local_pv(f"{ns}-results", results, platform.node.name, sc),
        claim("images", ns, f"{ns}-images", sc),
        claim("results", ns, f"{ns}-results", sc),
    ]
    dj = detectionjob(name, ns, platform.worker_image, "", "", secret=None)
    dj["spec"]["input"] = {"pvc": {"claimName": "images", "path": "set-a"}}
    dj["spec"]["output"] = {"pvc": {"claimName": "results"}, "samples": 2}
    try:
        platform.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        platform.kubectl("apply", "-f", "-", input=yaml.safe_dump(dj))
        done = wait_phase(platform, name, ("Succeeded", "Failed"), 900)
        # 4 of 16 images are corrupt: more than spec.failurePolicy.maxFailedFraction's default
        # (0.1), so the job is Failed, says why, and every result is written all the same.
        assert done["status"]["phase"] == "Failed", describe(platform, name)
        message = done["status"]["message"]
        print(f"{name}: Failed: {message}")
        assert message.startswith("detectionjob run: failed: 4 of 16 images failed (25.0%)"), message
        assert "max-failed-fraction" in message and "\n" not in message
        parts = sorted(p for p in results.glob("*.parquet"))
        assert parts, sorted(results.iterdir())
        table = pq.ParquetDataset([str(p) for p in parts]).read()
        paths = table.column("path").to_pylist()
        total = GOOD + len(corrupt_files())
        assert len(paths) == total and len(set(paths)) == total
        assert all(p.startswith("/mnt/detectionjob/input/set-a/") for p in paths), paths[:3]
        assert table.num_rows - table.column("error").null_count == len(corrupt_files())
        assert (results / "_summary.json").exists()
        assert len(list((results / "_samples").glob("*.png"))) == 2
    finally:
        platform.kubectl("delete", "dj", name, "-n", ns, "--wait=true", "--timeout=120s", check=False)
        platform.kubectl("delete", "pvc", "images", "results", "-n", ns, "--wait=false", check=False)
        platform.kubectl("delete", "pv", f"{ns}-images", f"{ns}-results", "--wait=false", check=False)
        shutil.rmtree(root, ignore_errors=True)
