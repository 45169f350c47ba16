"""Fixtures for the batch job's tests: one 2-CPU Ray runtime, sample images, saved test weights."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from torchvision.models import get_model

from inference.decode import decode_image
from inference.samples import make_samples

sys.path.insert(0, str(Path(__file__).resolve().parent))

from jobtest import FAST_MODEL  # noqa: E402


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
