"""`import operator` must stay the standard library's everywhere our code runs."""

import operator
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()


def _is_stdlib(path: str) -> bool:
    return Path(path).resolve().parent == STDLIB


def test_pytest_process_sees_the_stdlib_operator():
    assert _is_stdlib(operator.__file__) and callable(operator.itemgetter)
    assert not (REPO / "operator" / "__init__.py").exists()


def test_python_dash_m_from_the_repo_root():
    code = "import operator, inference, detectionjob_operator; print(operator.__file__)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          check=True)
    assert _is_stdlib(done.stdout.strip())
    done = subprocess.run([sys.executable, "-m", "inference", "--help"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0 and "run" in done.stdout


def test_ray_workers_with_the_repo_as_working_dir(tmp_path):
    """Ray ships the repo as ``working_dir`` and puts it first on the workers' sys.path."""
    code = f"""
import ray
ray.init(num_cpus=1, include_dashboard=False,
         runtime_env={{"working_dir": {str(REPO)!r}, "excludes": ["/.git", "*.pth", "*.parquet"]}})
@ray.remote
def where():
    import operator, os, sys
    return operator.__file__ + "\\n" + os.getcwd()
print(ray.get(where.remote()))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    module_file, worker_cwd = done.stdout.strip().splitlines()[-2:]
    assert (Path(worker_cwd) / "operator").is_dir(), "the worker must run inside the shipped repo"
    assert _is_stdlib(module_file)
