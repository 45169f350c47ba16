"""Fixtures for the batch job's tests: one 2-CPU Ray runtime, sample images, saved test weights."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torchvision.models import get_model

from inference.decode import decode_image
from inference.samples import make_samples

sys.path.insert(0, str(Path(__file__).resolve().parent))

from jobtest import FAST_MODEL, detectionjob, voc_folder  # noqa: E402


@pytest.fixture(scope="session")
def ray_runtime():
    """A local Ray runtime with exactly 2 CPUs (the CI machine's size), shared by the tests."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True,
             runtime_env={"env_vars": {"PYTHONWARNINGS": "ignore"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """Four same-size (320x240) synthetic scenes."""
    out = tmp_path_factory.mktemp("samples")
    make_samples(str(out), n=4, size=(320, 240), seed=1)
    return out


def calibrated_random_weights(name: str, images: list[Path], seed: int = 0) -> dict:
    """Seeded random init whose BatchNorm statistics are measured on ``images``.

    Untrained BatchNorm (mean 0, var 1) shrinks the signal ~10x per block, so every proposal
    gets the same features and every score ties at 1/num_classes. Measuring the statistics on
    real inputs (what BatchNorm does in training) and sharpening the classifier gives a random
    network with decisive, image-dependent detections: no pretrained download, nothing faked.
    """
    torch.manual_seed(seed)
    model = get_model(name, weights=None, weights_backbone=None).eval()
    tensors = [torch.from_numpy(decode_image(p.read_bytes()).copy()).permute(2, 0, 1).float() / 255
               for p in images]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration pass
        bn.train()
    with torch.no_grad():
        model.backbone(model.transform(tensors)[0].tensors)
        predictor = model.roi_heads.box_predictor
        predictor.cls_score.weight.mul_(20.0)
    for bn in norms:
        bn.eval()
    return model.state_dict()


@pytest.fixture(scope="session")
def test_weights(sample_dir, tmp_path_factory) -> Path:
    """A ``.pth`` state_dict of the fast model, saved by the test suite itself."""
    path = tmp_path_factory.mktemp("weights") / f"{FAST_MODEL}-calibrated.pth"
    torch.save(calibrated_random_weights(FAST_MODEL, sorted(sample_dir.glob("*.jpg"))), path)
    return path


@pytest.fixture
def no_gpu_env(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    return os.environ


@pytest.fixture
def ray_tmpdir():
    """A short private Ray temp dir (Unix socket paths are limited to 107 bytes)."""
    path = tempfile.mkdtemp(prefix="djray-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class CliRun:
    """One finished ``python -m inference run``, as a user runs it, for several tests to read."""

    done: subprocess.CompletedProcess
    input: Path  # four images, and the output folder inside them
    output: Path
    annotations: Path  # a VOC folder the run evaluated against
    ray_tmpdir: str  # the run's own Ray temp dir (its processes carry it in their command lines)


@pytest.fixture(scope="session")
def cli_run(sample_dir, tmp_path_factory) -> Iterator[CliRun]:
    """The command on the four sample images with what a user adds (two samples, an evaluation),
    its output inside its input, Python's default warnings, stdout and stderr pipes. A job run costs
    ~25 CPU-s on these 2-core machines: the tests that only read its outputs share this one."""
    root = tmp_path_factory.mktemp("cli-run")
    src = root / "in"
    shutil.copytree(sample_dir, src)
    annotations = voc_folder(sorted(src.glob("*.jpg")), root / "voc")
    ray_tmpdir = tempfile.mkdtemp(prefix="djray-", dir="/tmp")
    out = src / "results"
    done = detectionjob(["run", "--input", str(src), "--output", str(out), "--model", FAST_MODEL,
                         "--weights", "none", "--score-threshold", "0", "--samples", "2",
                         "--evaluate-annotations", str(annotations)], ray_tmpdir, root, warnings=None)
    yield CliRun(done, src, out, annotations, ray_tmpdir)
    shutil.rmtree(ray_tmpdir, ignore_errors=True)
