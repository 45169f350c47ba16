"""``python -m inference`` as a user runs it: a separate process, exit codes, nothing lost or left."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from jobtest import FAST_MODEL, detectionjob


def processes_under(path: str) -> list[str]:
    """Command lines of live processes that mention ``path`` (Ray's daemons carry their session dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if path in cmdline:
                found.append(cmdline)
    return found


def test_run_as_a_command_writes_everything_and_leaves_no_ray_processes(sample_dir, tmp_path, ray_tmpdir):
    out = tmp_path / "out"
    done = detectionjob(["run", "--input", str(sample_dir), "--output", str(out), "--model", FAST_MODEL,
                         "--weights", "none", "--samples", "1"], ray_tmpdir, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # the whole summary reached the pipe before the process exited
    assert summary == json.loads((out / "_summary.json").read_text())
    assert summary["images"] == len(pd.read_parquet(out)) == 4
    assert len(list((out / "_samples").glob("*.png"))) == 1
    assert Path(ray_tmpdir, "ray").is_dir(), "the job ran its own Ray under RAY_TMPDIR"
    assert processes_under(ray_tmpdir) == []


def test_unknown_model_is_a_clear_error_and_loses_nothing(sample_dir, tmp_path, ray_tmpdir):
    out = tmp_path / "out"
    first = detectionjob(["run", "--input", str(sample_dir), "--output", str(out), "--model", FAST_MODEL,
                          "--weights", "none", "--limit", "1"], ray_tmpdir, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    before = sorted(p.name for p in out.iterdir())
    done = detectionjob(["run", "--input", str(sample_dir), "--output", str(out), "--model", "not_a_model",
                         "--weights", "none"], ray_tmpdir, tmp_path)
    assert done.returncode == 2
    assert "--model: 'not_a_model' is not a torchvision detection model" in done.stderr
    assert FAST_MODEL in done.stderr  # the choices are listed
    assert sorted(p.name for p in out.iterdir()) == before  # the earlier results are untouched
    assert processes_under(ray_tmpdir) == []
