"""``python -m inference`` as a user runs it: a separate process, exit codes, nothing lost or left."""

from __future__ import annotations

import json
import shutil
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


def test_run_as_a_command_writes_everything_and_leaves_no_ray_processes(cli_run):
    done, out = cli_run.done, cli_run.output
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # the whole summary reached the pipe before the process exited
    assert summary == json.loads((out / "_summary.json").read_text())
    assert summary["images"] == len(pd.read_parquet(out)) == 4
    assert len(list((out / "_samples").glob("*.png"))) == 2
    assert Path(cli_run.ray_tmpdir, "ray").is_dir(), "the job ran its own Ray under RAY_TMPDIR"
    assert processes_under(cli_run.ray_tmpdir) == []


def test_unknown_model_is_a_clear_error_and_loses_nothing(cli_run, tmp_path, ray_tmpdir):
    out = tmp_path / "out"
    shutil.copytree(cli_run.output, out)  # earlier results
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    done = detectionjob(["run", "--input", str(cli_run.input), "--output", str(out), "--model", "not_a_model",
                         "--weights", "none"], ray_tmpdir, tmp_path)
    assert done.returncode == 2
    assert "--model: 'not_a_model' is not a torchvision detection model" in done.stderr
    assert FAST_MODEL in done.stderr  # the choices are listed
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # untouched
    assert processes_under(ray_tmpdir) == []
