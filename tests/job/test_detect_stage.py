"""The driver runs without torch; the detector actor runs at nice 0 with its own OpenMP threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.fs as pafs
import pytest
from jobtest import FAST_MODEL

from inference.decode import load_images
from inference.detect_stage import DetectStage
from inference.detector import Detector
from inference.models import detection_models
from inference.pool import plan_pool
from inference.spec import DETECTION_MODELS, ModelError, ModelSpec, check_model_name


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
    code = ("import sys, inference.cli, inference.pipeline, inference.detect_stage, inference.writer, "
            "inference.summary, ray.data; print(json.dumps(sorted(m for m in ('torch', 'torchvision') "
            "if m in sys.modules)))")
    assert json.loads(run_python("import json; " + code)) == []


@pytest.mark.parametrize("cpus", [2, 4])
def test_detector_actor_runs_at_nice_0_with_its_openmp_threads(ray_runtime, cpus):
    import ray.data

    plan = plan_pool(None, None, cluster_cpus=cpus, cluster_gpus=0)
    assert plan.torch_threads == cpus  # one CPU actor below 8 CPUs

    class Probe:  # local, so Ray pickles it by value (this module does not import on workers)
        """What a detector actor's process sees: its niceness and OpenMP threads."""

        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {"nice": np.array([os.nice(0)]), "omp": np.array([os.environ.get("OMP_NUM_THREADS", "")])}

    def probe(**remote_args):
        return ray.data.range(1).map_batches(Probe, batch_size=1, compute=ray.data.ActorPoolStrategy(size=1),
                                             num_cpus=1, **remote_args).take_all()[0]

    # Control: Ray's defaults, which the detector's environment exists to change.
    assert probe() == {"nice": 15, "omp": "1"}
    assert probe(runtime_env={"env_vars": plan.env_vars()}) == {"nice": 0, "omp": str(plan.torch_threads)}


def test_stage_detects_like_the_detector(sample_dir):
    """The wrapper adds nothing to the rows: same table as ``Detector`` itself on real images."""
    paths = sorted(str(p) for p in sample_dir.glob("*.jpg"))[:2]
    batch = load_images({"path": np.array(paths), "uri": np.array(paths)}, fs=pafs.LocalFileSystem())
    spec = ModelSpec(FAST_MODEL, "none", score_threshold=0.0)
    table = DetectStage(spec)(batch)
    assert table.num_rows == 2 and sum(len(s) for s in table["scores"].to_pylist()) > 0
    assert table.equals(Detector(spec)(batch))


def test_decode_fuses_into_the_detector_actor_on_cpu(ray_runtime, sample_dir):
    """Same remote args on both stages: no decode tasks, no object-store hop for the images."""
    from inference.pipeline import RunConfig, build_dataset

    paths = sorted(str(p) for p in sample_dir.glob("*.jpg"))[:2]
    config = RunConfig(input=str(sample_dir), output="unused", model=FAST_MODEL, weights="none")
    plan = plan_pool(None, None, cluster_cpus=2, cluster_gpus=0)
    ds = build_dataset([(p, p) for p in paths], pafs.LocalFileSystem(), config, plan)
    rows = ds.take_all()
    assert sorted(r["path"] for r in rows) == paths and all(r["error"] is None for r in rows)
    assert "MapBatches(load_images)->MapBatches(DetectStage)" in ds.stats()
