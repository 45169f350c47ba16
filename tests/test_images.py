"""The real images from hack/build-images.sh: what the test node imports and runs.

Runs the script (a no-op when the images are cached, as after hack/test.sh), reads each
`docker save` tar the node imports, and runs the images in the script's private dockerd
(`--with-dockerd`; no network in the containers). Needs root and hack/install-node.sh.
"""

from __future__ import annotations

import re

import pytest
from harness import images as harness_images

pytestmark = pytest.mark.e2e

RAY_VERSION = re.search(
    r"^ARG RAY_VERSION=(\S+)$", (harness_images.REPO_ROOT / "Dockerfile.worker").read_text(), re.MULTILINE
).group(1)
TORCH_VERSION = re.search(
    r"^TORCH_VERSION=(\S+)", harness_images.BUILD_SCRIPT.read_text(), re.MULTILINE
).group(1)


@pytest.fixture(scope="module")
def built() -> harness_images.BuildResult:
    return harness_images.build()


@pytest.fixture(scope="module")
def images(built) -> dict[str, harness_images.Image]:
    return built.images


@pytest.fixture(scope="module")
def docker(built):
    with harness_images.private_docker() as docker:
        yield docker


def test_check_mode_lists_the_built_tars(images):
    assert harness_images.check() == images
    for image in images.values():
        assert image.tar.is_file() and image.tar.stat().st_size > 0
        assert image.ref == f"detectionjob-{image.name}:{image.tar.stem.rsplit('-', 1)[1]}"


def test_second_run_rebuilds_nothing(images):
    again = harness_images.build(timeout=300)
    assert again.images == images
    # Both tars cached: the script starts no dockerd and builds nothing.
    assert "starting dockerd" not in again.stderr, again.stderr
    assert "docker build" not in again.stderr, again.stderr
    assert "cached:" in again.stderr, again.stderr
    assert again.seconds < 30, again.stderr


@pytest.mark.parametrize("name", harness_images.NAMES)
def test_tar_carries_both_tags(images, name):
    image = images[name]
    assert sorted(harness_images.saved_tags(image.tar)) == sorted([image.ref, image.stable_ref])


@pytest.mark.parametrize(("name", "user"), [("worker", "1000:100"), ("operator", "65532:65532")])
def test_configured_user_is_numeric_non_root(images, name, user):
    """Pod Security `restricted` (runAsNonRoot) can only verify a numeric user."""
    config = harness_images.image_config(images[name].tar)["config"]
    assert config["User"] == user
    uid, _, gid = config["User"].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit()


def test_operator_entrypoint(images):
    config = harness_images.image_config(images["operator"].tar)["config"]
    assert config["Entrypoint"] == ["python", "-m", "detectionjob_operator"]
    assert config["Cmd"] == ["operator"]


def _run(docker, ref, *args, user=None, entrypoint=None, check=True):
    argv = ["run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp"]
    if user:
        argv += ["--user", user]
    if entrypoint:
        argv += ["--entrypoint", entrypoint]
    return docker(*argv, ref, *args, check=check)


def test_worker_imports_as_ray_user(docker, images):
    code = (
        "import os, inference, ray, torch, torchvision; "
        "print(os.getuid(), os.getgid(), os.environ['HOME'], ray.__version__, torch.__version__)"
    )
    proc = _run(docker, images["worker"].ref, "python", "-c", code, user="1000:100")
    uid, gid, home, ray_version, torch_version = proc.stdout.split()
    assert (uid, gid, home) == ("1000", "100", "/home/ray")
    assert ray_version == RAY_VERSION
    assert torch_version.split("+")[0] == TORCH_VERSION


def test_worker_cli(docker, images):
    proc = _run(docker, images["worker"].ref, "detectionjob", "--help", user="1000:100")
    assert "usage" in proc.stdout.lower()
    # The image's default user is the same (no --user): KubeRay's Pods need not set one.
    proc = _run(docker, images["worker"].ref, "id")
    assert proc.stdout.startswith("uid=1000(ray) gid=100(users)"), proc.stdout


def test_worker_has_what_kuberay_runs(docker, images):
    proc = _run(docker, images["worker"].ref, "bash", "-c", "command -v ray wget && ray --version")
    assert RAY_VERSION in proc.stdout


def test_operator_help_and_no_torch_or_ray(docker, images):
    ref = images["operator"].ref
    proc = _run(docker, ref, "--help")
    assert "usage" in proc.stdout.lower()
    proc = _run(docker, ref, "-c", "import os; print(os.getuid(), os.getgid())", entrypoint="python")
    assert proc.stdout.split() == ["65532", "65532"]
    for module in ("torch", "ray"):
        proc = _run(docker, ref, "-c", f"import {module}", entrypoint="python", check=False)
        assert proc.returncode != 0
        assert f"No module named '{module}'" in proc.stderr


def test_both_images_validate_a_detectionjob_with_their_crd(docker, images):
    """The operator validates specs with the CRD shipped in its package (a link in the source
    tree): the image must carry the file itself, as the operator and the job load it."""
    doc = ('{"apiVersion": "detectionjob.dev/v1alpha1", "kind": "DetectionJob", "metadata": {"name": "x"},'
           ' "spec": {"input": {"uri": "s3://b/in/"}, "output": {"uri": "s3://b/out/"}, "image": "w:1"}}')
    code = ("import json, sys; from detectionjob_operator.spec import parse; "
            "print(parse(json.loads(sys.argv[1])).spec_values['model']['name'])")
    for name, entrypoint in (("operator", "python"), ("worker", None)):
        args = ("-c", code, doc) if entrypoint else ("python", "-c", code, doc)
        proc = _run(docker, images[name].ref, *args, entrypoint=entrypoint)
        assert proc.stdout.strip() == "fasterrcnn_resnet50_fpn_v2", (name, proc.stdout, proc.stderr)
