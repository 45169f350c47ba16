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
