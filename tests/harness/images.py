"""The container images hack/build-images.sh builds (detectionjob-worker, detectionjob-operator).

The script owns the names, keys and cache paths; this module only runs it and parses its
stdout, so the two never disagree:

* :func:`check` -- ``--check`` (builds nothing): the refs and tar paths; raises
  :class:`ImagesMissing` when a tar is not built.
* :func:`build` -- runs the script (a no-op that starts nothing when both tars are cached).
* :func:`image_config` -- an image's OCI/Docker config read straight from its ``docker save``
  tar (no daemon needed): ``config["config"]["User"]`` and so on.
* :func:`private_docker` -- a context manager that runs the script's private dockerd
  (``--with-dockerd``) and yields a ``docker(*args)`` function bound to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-images.sh"
#: Debian's docker.io 20.10 CLI (a newer CLI earlier on PATH may not talk to dockerd 20.10).
DOCKER = "/usr/bin/docker"
NAMES = ("worker", "operator")
#: Each tar also carries this stable tag (``.format(name=...)``).
STABLE_REF = "detectionjob.local/detectionjob-{name}:test"


class ImagesMissing(RuntimeError):
    pass


class ImagesBuildFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Image:
    name: str  # "worker" or "operator"
    ref: str  # detectionjob-<name>:<key>
    tar: Path  # <cache>/detectionjob-<name>-<key>.tar (docker save: ref and STABLE_REF)

    @property
    def stable_ref(self) -> str:
        return STABLE_REF.format(name=self.name)


@dataclass(frozen=True)
class BuildResult:
    images: dict[str, Image]
    stderr: str
    seconds: float


def _parse(stdout: str) -> dict[str, Image]:
    values = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    found = {}
    for name in NAMES:
        ref, tar = values.get(name.upper()), values.get(f"{name.upper()}_TAR")
        if ref and tar:
            found[name] = Image(name, ref, Path(tar))
    return found


def _run(*args: str, timeout: float | None) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    return proc, time.monotonic() - start


def check() -> dict[str, Image]:
    """Refs and tar paths of the current inputs; raises :class:`ImagesMissing` if one is not built."""
    proc, _ = _run("--check", timeout=120)
    images = _parse(proc.stdout)
    if proc.returncode != 0 or set(images) != set(NAMES):
        raise ImagesMissing(
            "the images are not built for the current sources. Run `bash hack/build-images.sh`"
            " as root (about 15 min cold on 2 cores, cached afterwards; see hack/README.md).\n"
            + proc.stderr.strip()
        )
    return images


def build(timeout: float = 3600) -> BuildResult:
    """Run the script: builds what is missing, prints the refs (nothing to do when cached)."""
    proc, seconds = _run(timeout=timeout)
    images = _parse(proc.stdout)
    if proc.returncode != 0 or set(images) != set(NAMES):
        raise ImagesBuildFailed(
            f"bash hack/build-images.sh exited {proc.returncode}\n--- stdout\n{proc.stdout}"
            f"--- stderr (last 60 lines)\n" + "\n".join(proc.stderr.splitlines()[-60:])
        )
    return BuildResult(images, proc.stderr, seconds)


def saved_tags(tar: Path) -> list[str]:
    """The RepoTags a ``docker save`` tar carries (what ``ctr images import`` will name)."""
    with tarfile.open(tar, mode="r:") as archive:
        manifest = json.load(archive.extractfile("manifest.json"))
    return [tag for entry in manifest for tag in entry.get("RepoTags") or []]


def image_config(tar: Path) -> dict:
    """The image config (``{"config": {"User": ..., "Env": ...}, "rootfs": ...}``) of the
    single image in a ``docker save`` tar, read without a daemon."""
    with tarfile.open(tar, mode="r:") as archive:
        manifest = json.load(archive.extractfile("manifest.json"))
        configs = {entry["Config"] for entry in manifest}
        if len(configs) != 1:
            raise ValueError(f"{tar}: expected one image, found configs {sorted(configs)}")
        return json.load(archive.extractfile(configs.pop()))


class Docker:
    """``docker(*args)`` against the script's private dockerd (text mode, captured output)."""

    def __init__(self, host: str):
        self.host = host
        self.env = {**os.environ, "DOCKER_HOST": host, "DOCKER_CLI_HINTS": "false"}

    def __call__(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [DOCKER, *args], capture_output=True, text=True, env=self.env, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {proc.returncode}\n"
                f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
            )
        return proc


@contextlib.contextmanager
def private_docker(timeout: float = 120) -> Iterator[Docker]:
    """Run the script's private dockerd for the duration of the block.

    ``build-images.sh --with-dockerd cat``: the script starts dockerd, prints DOCKER_HOST and
    runs ``cat``, which ends when we close its stdin (or when this process dies); the script
    then stops dockerd and its containerd.
    """
    with tempfile.TemporaryFile(mode="w+") as errors:
        proc = subprocess.Popen(
            ["bash", str(BUILD_SCRIPT), "--with-dockerd", "cat"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        try:
            line = proc.stdout.readline()
            if not line.startswith("DOCKER_HOST="):
                proc.wait(timeout=timeout)
                errors.seek(0)
                raise ImagesBuildFailed(
                    f"build-images.sh --with-dockerd did not start dockerd:\n{line}{errors.read()}"
                )
            yield Docker(line.strip().partition("=")[2])
        finally:
            with contextlib.suppress(BrokenPipeError, OSError):
                proc.stdin.close()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait(timeout=30)
            proc.stdout.close()
