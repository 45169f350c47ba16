"""Fixtures for the install tests: the Helm chart, the kustomize manifests, the images.

``helm`` and ``kubectl`` here are the harness's binaries (hack/build-binaries.sh) when
they are built, else ``$HELM`` / ``$KUBECTL`` or the ones on PATH. Rendering
(``helm template``, ``kubectl kustomize``) needs no control plane; tests that need
the real apiserver use the harness's ``kube`` fixture and are marked ``cluster``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from install._support import CHART, KUBE_VERSION, NAMESPACE, RELEASE, load_all, run


def _tool(name: str, env_var: str) -> str | None:
    try:
        from harness.binaries import binary

        path = binary(name)
        if path.exists():
            return str(path)
    except Exception:  # noqa: BLE001 - not built yet: fall back to the environment
        pass
    return os.environ.get(env_var) or shutil.which(name)


@pytest.fixture(scope="session")
def helm_bin() -> str:
    path = _tool("helm", "HELM")
    if not path:
        pytest.skip("no helm binary: run hack/build-binaries.sh (or set $HELM)")
    return path


@pytest.fixture(scope="session")
def kubectl_bin() -> str:
    path = _tool("kubectl", "KUBECTL")
    if not path:
        pytest.skip("no kubectl binary: run hack/build-binaries.sh (or set $KUBECTL)")
    return path


Render = Callable[..., list[dict]]


@pytest.fixture(scope="session")
def render(helm_bin: str) -> Render:
    """``render(*values_files, set=[...], release=..., namespace=..., crds=False)`` -> objects.

    With ``check=False`` returns the CompletedProcess instead (to test failures).
    """

    def _render(
        *values: Path | str,
        set: Sequence[str] = (),  # noqa: A002 - helm's flag name
        release: str = RELEASE,
        namespace: str = NAMESPACE,
        crds: bool = False,
        check: bool = True,
    ):
        argv = [helm_bin, "template", release, str(CHART), "--namespace", namespace,
                "--kube-version", KUBE_VERSION]
        if crds:
            argv.append("--include-crds")
        for v in values:
            argv += ["--values", str(v)]
        for s in set:
            argv += ["--set", s]
        proc = run(argv, check=check)
        return load_all(proc.stdout) if check else proc

    return _render
