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


def joining(ray) -> list[str]:
    """``--ray-address`` of the tests' shared Ray runtime: a job that joins it skips a Ray start of its
    own (~12 CPU-s on these 2-core machines: Ray's daemons and Ray Data's helper actors). For the
    tests whose subject is not the local start."""
    return ["--ray-address", ray.get_runtime_context().gcs_address]


def voc_folder(images: list[Path], folder: Path) -> Path:
    """A Pascal VOC annotation per image (320x240): two boxes (a person and a car) each."""
    folder.mkdir()
    for i, image in enumerate(images):
        objects = "".join(
            f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x}</xmin><ymin>20</ymin>"
            f"<xmax>{x + 90}</xmax><ymax>200</ymax></bndbox></object>"
            for name, x in (("person", 10 + i), ("car", 150)))
        (folder / f"{image.stem}.xml").write_text(
            f"<annotation><filename>{image.name}</filename><size><width>320</width><height>240</height>"
            f"<depth>3</depth></size>{objects}</annotation>")
    return folder


def _parents() -> dict[int, int]:
    """Every live process on this machine: pid -> parent pid."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):  # gone meanwhile
                continue
    return parents


def descendants(root: int) -> set[int]:
    """Processes under ``root``, at any depth."""
    parents = _parents()
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def detector_processes(under: int) -> dict[int, int]:
    """Detector actor processes (Ray titles them after the stage) under process ``under``: pid ->
    parent. Only a test's own: the end-to-end run beside this one has detectors on this machine
    too (in its Pods), and so may another test's Ray."""
    mine = descendants(under)
    found = {}
    for pid in mine:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        if cmd.startswith("ray::") and "ShardStage" in cmd:
            found[pid] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def one_line_error(done, option: str) -> str:
    """The run's whole stderr: one line naming ``option``, no traceback."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert lines[0].startswith(f"detectionjob run: error: {option}: "), lines[0]
    return lines[0]


def ray_started(ray_tmpdir: str) -> bool:
    return Path(ray_tmpdir, "ray").exists()
