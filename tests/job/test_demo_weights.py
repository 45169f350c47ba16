"""The demo's weights: pretrained where torch's cache has them or they download, else random with
one line that says so. No test reaches the internet: the download goes to a closed loopback proxy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from jobtest import FAST_MODEL

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "hack" / "demo-weights.py"


def choose(torch_home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "all_proxy")}
    # Nothing listens on loopback port 9: a download fails at once, without leaving the machine.
    env.update(TORCH_HOME=str(torch_home), https_proxy="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
               http_proxy="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    return subprocess.run([sys.executable, str(SCRIPT), FAST_MODEL, "20"], capture_output=True, text=True,
                          env=env, timeout=300, check=True)


def test_without_a_download_the_demo_says_so_and_uses_random_weights(tmp_path):
    done = choose(tmp_path)
    assert done.stdout == "none\n"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"demo: pretrained weights for {FAST_MODEL} could not be downloaded (")
    assert lines[0].endswith("using random weights: the pipeline is real, the boxes are meaningless")
    assert not list(tmp_path.rglob("*.pth"))


def test_cached_pretrained_weights_are_used_and_the_job_loads_them_offline(tmp_path, monkeypatch):
    from torchvision.models import get_model, get_model_weights

    from inference.models import ModelConfig, build_model

    torch.manual_seed(7)
    saved = get_model(FAST_MODEL, weights=None, weights_backbone=None).state_dict()
    url = get_model_weights(FAST_MODEL).DEFAULT.url
    cached = tmp_path / "hub" / "checkpoints" / os.path.basename(url)
    cached.parent.mkdir(parents=True)
    torch.save(saved, cached)

    done = choose(tmp_path)
    assert done.stdout == "DEFAULT\n"
    assert done.stderr.strip() == f"demo: pretrained COCO weights for {FAST_MODEL} ({cached})"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    model, categories = build_model(ModelConfig(name=FAST_MODEL, weights="DEFAULT"))
    loaded = model.state_dict()  # frozen batch norms (pretrained) keep no num_batches_tracked
    assert set(loaded) == {k for k in saved if not k.endswith("num_batches_tracked")}
    assert all(torch.equal(v, saved[k]) for k, v in loaded.items())
    assert categories[1] == "person"
