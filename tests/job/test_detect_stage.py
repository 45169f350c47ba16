"""The driver runs without torch; the detector actor runs at nice 0 with its own OpenMP threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from jobtest import FAST_MODEL

from inference.decode import load_uris
from inference.detector import Detector
from inference.model_config import DETECTION_MODELS, ModelConfig, ModelError, check_model_name
from inference.models import detection_models
from inference.pool import plan_pool
from inference.sampling import candidates
from inference.shard_stage import ShardStage
from inference.shards import shard_id, shard_table
from inference.uris import resolve


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_static_model_list_is_torchvisions():
    assert list(DETECTION_MODELS) == detection_models()


def test_unknown_model_is_named():
    check_model_name(FAST_MODEL)
    with pytest.raises(ModelError, match="--model: 'yolo'.*fasterrcnn_resnet50_fpn_v2"):
        check_model_name("yolo")


def test_driver_modules_do_not_import_torch():
    code = ("import sys, inference.cli, inference.pipeline, inference.shard_stage, inference.writer, "
            "inference.shard_source, inference.listing, inference.summary, ray.data; "
            "print(json.dumps(sorted(m for m in ('torch', 'torchvision') if m in sys.modules)))")
    assert json.loads(run_python("import json; " + code)) == []


@pytest.mark.parametrize("cpus", [2, 4])
def test_detector_actor_runs_at_nice_0_with_its_openmp_threads(ray_runtime, cpus):
    import ray.data

    plan = plan_pool(None, None, cluster_cpus=cpus, cluster_gpus=0)
    assert plan.torch_threads == cpus  # one CPU actor below 8 CPUs

    class Probe:  # local, so Ray pickles it by value (this module does not import on workers)
        """What a detector actor's process sees: its niceness and OpenMP threads, and whether the
        thread Ray Data runs it in (not the main thread) gets large blocks back from malloc without
        faulting them in anew (inference.allocator): page faults per round of two 40 MiB blocks
        allocated, written and freed (two: a thread's second 64 MiB heap is the one glibc unmaps)."""

        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            import resource

            blocks = [bytearray(40 << 20), bytearray(40 << 20)]  # zero-filled: every page written
            del blocks
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(4):
                blocks = [bytearray(40 << 20), bytearray(40 << 20)]
                del blocks
            faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4
            return {"nice": np.array([os.nice(0)]), "omp": np.array([os.environ.get("OMP_NUM_THREADS", "")]),
                    "refaulted": np.array([faults > (40 << 20) // 4096 // 2])}

    def probe(**remote_args):
        return ray.data.range(1).map_batches(Probe, batch_size=1, compute=ray.data.ActorPoolStrategy(size=1),
                                             num_cpus=1, **remote_args).take_all()[0]

    # Control: Ray's defaults, which the detector's environment exists to change.
    assert probe() == {"nice": 15, "omp": "1", "refaulted": True}
    assert probe(runtime_env={"env_vars": plan.env_vars()}) == {"nice": 0, "omp": str(plan.torch_threads),
                                                               "refaulted": False}


def test_shard_stage_writes_the_detectors_rows_as_the_shards_part(sample_dir, tmp_path):
    """The stage adds nothing to the rows: its part holds what ``Detector`` itself returns, and
    running the shard again (a retried task) replaces the part instead of adding rows."""
    paths = sorted(str(p) for p in sample_dir.glob("*.jpg"))[:3] + [str(tmp_path / "missing.jpg")]
    spec = ModelConfig(FAST_MODEL, "none", score_threshold=0.0)
    out = resolve(str(tmp_path / "out"))
    stage = ShardStage(spec, out, {"": resolve("/")}, batch_size=2, samples=2)
    shard = shard_id(paths)
    stats = stage(shard_table([(shard, paths, "todo")])).to_pylist()
    assert [s["shard"] for s in stats] == [shard]
    part = pq.read_table(tmp_path / "out" / f"part-{shard}.parquet")
    expected = Detector(spec)(load_uris(paths, lambda u: (pafs.LocalFileSystem(), u)))
    assert part.equals(expected)
    assert stats[0]["images"] == 4 and stats[0]["failed"] == 1 and stats[0]["listed"] == 4
    assert stats[0]["detections"] == sum(len(s) for s in part["scores"].to_pylist() if s) > 0
    assert sum(json.loads(stats[0]["per_class"]).values()) == stats[0]["detections"]
    assert [r["path"] for r in json.loads(stats[0]["samples"])] == \
        [r["path"] for r in candidates(part, 2)]
    stage(shard_table([(shard, paths, "todo")]))
    # no temporary left, and the shard's attempt marker is cleared once its part is published
    assert sorted(os.listdir(tmp_path / "out")) == ["_attempts", f"part-{shard}.parquet"]
    assert os.listdir(tmp_path / "out" / "_attempts") == []
    assert pq.read_table(tmp_path / "out").num_rows == 4
    skipped = stage(shard_table([(shard, paths, "done")])).to_pylist()[0]
    assert (skipped["skipped"], skipped["images"]) == (4, 0)


FAULTS_PER_BATCH = """
import resource, sys
import numpy as np
import inference.detector
from inference.detector import Detector
from inference.model_config import ModelConfig
if sys.argv[1] == "glibc-defaults":
    inference.detector.keep_freed_memory = lambda: None
detector = Detector(ModelConfig({model!r}, "none"), num_threads=1)
images = [np.random.default_rng(i).integers(0, 256, (375, 500, 3), dtype=np.uint8) for i in range(4)]
for _ in range(3):  # the first batches allocate the working memory
    detector.detect(images)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    detector.detect(images)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / 4)
"""


def test_a_detector_reuses_its_memory_between_batches():
    """glibc would hand a batch's large blocks back to the kernel and fault them in again, zeroed,
    for the next batch (~13,000 page faults per image on the CPU benchmark); the detector keeps them
    (inference.allocator): its later batches fault in a fraction of that."""
    code = FAULTS_PER_BATCH.format(model=FAST_MODEL)
    counts = {}
    for how in ("glibc-defaults", "detector"):
        out = subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert out.returncode == 0, out.stderr[-3000:]
        counts[how] = float(out.stdout.split()[-1])
    assert counts["glibc-defaults"] > 4096, counts  # 16 MiB of pages a batch, at least
    assert counts["detector"] < counts["glibc-defaults"] / 10, counts
