"""The throughput benchmark runs end to end on a handful of images (its numbers are not judged here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from jobtest import FAST_MODEL

ROOT = Path(__file__).resolve().parents[2]


def test_throughput_benchmark_small(tmp_path):
    env = {**os.environ, "DETECTIONJOB_BENCH_CACHE": str(tmp_path / "cache"), "PYTHONWARNINGS": "ignore"}
    env.pop("RAY_ADDRESS", None)
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--n", "8", "--model", FAST_MODEL,
         "--modes", "bare,detectionjob", "--memory-interval", "0.5", "--json", str(out)],
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert list(rows) == ["bare PyTorch loop (first)", "detectionjob run", "bare PyTorch loop (last)"]
    assert all(r["images"] == 8 and r["rate"] > 0 and r["peak_bytes"] > 2**27 for r in rows.values())
    assert "| detectionjob run |" in result.stdout and "ratios are to their mean" in result.stdout
    assert len(list((tmp_path / "cache" / "voc-like-8").glob("*.jpg"))) == 8


def test_precision_comparison_matches_boxes_one_to_one_by_label_and_iou():
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from precision import compare

    ref = {"boxes": torch.tensor([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60.]]),
           "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 2, 1])}
    other = {"boxes": torch.tensor([[0, 0, 10, 11], [0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60.]]),
             "scores": torch.tensor([0.85, 0.5, 0.8, 0.6]), "labels": torch.tensor([1, 1, 2, 3])}
    got = compare(ref, other)
    # the exact copy of box 0 wins over the near one, which is gained; box 2 changed label: lost
    assert (got["ref"], got["other"], got["matched"]) == (3, 4, 2)
    assert got["ious"] == [1.0, 1.0]
    assert sorted(round(d, 3) for d in got["score_diffs"]) == [-0.4, 0.0]
    assert compare(ref, {k: v[:0] for k, v in other.items()})["matched"] == 0


def test_the_gpu_samplers_steady_state_skips_a_blip_before_it():
    """A kernel sampled at start-up, seconds before the work, is not the steady state's start (the
    bf16 job row of 2026-12-04 read 24 % busy that way); short idle gaps within it count."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from throughput import steady_stretch

    start_up = [0, 0, 30, 0, 0, 0, 0, 0, 0, 0]
    work = [50, 60, 0, 70, 0, 0, 80]
    assert steady_stretch(start_up + work + [0, 0, 0]) == work
    assert steady_stretch([]) == [] and steady_stretch([0, 0]) == []


def test_decode_interference_runs_and_the_two_decoders_agree(tmp_path):
    env = {**os.environ, "DETECTIONJOB_BENCH_CACHE": str(tmp_path / "cache"), "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "decode_interference.py"), "--n", "4", "--threads", "1",
         "--seconds", "0.3"], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["decoder"] for r in lines[:2]] == ["Pillow", "torchvision.io"]
    assert all(r["images/s"] > 0 and r["ops vs alone"] > 0 for r in lines[:2])
    assert lines[-1]["pixel_equal"] == "4/4"
