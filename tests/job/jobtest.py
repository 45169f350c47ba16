"""Helpers for the batch job's tests (imported as `jobtest`; conftest.py puts this folder on sys.path)."""

import os
import subprocess
import sys
from pathlib import Path

# The smallest torchvision detector: what the job's tests run unless they test a model itself.
FAST_MODEL = "fasterrcnn_mobilenet_v3_large_320_fpn"


def detectionjob(args: list[str], ray_tmpdir: str, cwd: Path,
                 warnings: str | None = "ignore") -> subprocess.CompletedProcess:
    """``python -m inference ARGS`` as a user runs it, its Ray under ``ray_tmpdir``;
    ``PYTHONWARNINGS`` is ``warnings`` (None: unset, Python's default, as for a user)."""
    full = {**os.environ, "RAY_TMPDIR": ray_tmpdir}
    full.pop("PYTHONWARNINGS", None)
    if warnings is not None:
        full["PYTHONWARNINGS"] = warnings
    full.pop("RAY_ADDRESS", None)
    full.pop("PYTHONUNBUFFERED", None)  # stdout to a pipe is block-buffered, as in a real job
    return subprocess.run([sys.executable, "-m", "inference", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env=full)


def detector_processes() -> dict[int, int]:
    """This machine's detector actor processes (Ray titles them after the stage): pid -> parent."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        if cmd.startswith("ray::") and "ShardStage" in cmd:
            found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found
