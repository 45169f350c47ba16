"""The driver runs without torch; the detector stage sets the actor's OpenMP threads before torch loads."""

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
from inference.spec import DETECTION_MODELS, ModelError, ModelSpec, check_model_name


def run_python(code: str, **env: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONWARNINGS": "ignore", **env})
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


def test_stage_sets_openmp_threads_before_torch_loads():
    # Ray sets OMP_NUM_THREADS to the actor's CPU request (1) before the actor's constructor runs.
    code = ("import os, json; from inference.detect_stage import DetectStage; "
            "from inference.spec import ModelSpec; "
            f"s = DetectStage(ModelSpec({FAST_MODEL!r}, 'none'), num_threads=2); import torch; "
            "print(json.dumps([os.environ['OMP_NUM_THREADS'], torch.get_num_threads()]))")
    assert json.loads(run_python(code, OMP_NUM_THREADS="1")) == ["2", 2]


def test_stage_detects_like_the_detector(sample_dir):
    """The wrapper adds nothing to the rows: same table as ``Detector`` itself on real images."""
    paths = sorted(str(p) for p in sample_dir.glob("*.jpg"))[:2]
    batch = load_images({"path": np.array(paths), "uri": np.array(paths)}, fs=pafs.LocalFileSystem())
    spec = ModelSpec(FAST_MODEL, "none", score_threshold=0.0)
    table = DetectStage(spec)(batch)
    assert table.num_rows == 2 and sum(len(s) for s in table["scores"].to_pylist()) > 0
    assert table.equals(Detector(spec)(batch))
