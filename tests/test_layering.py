"""Dependencies point one way: the operator may use the job's torch-free modules, never the reverse."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(package: Path) -> dict[str, set[str]]:
    """Every module each file of ``package`` imports (top-level and lazy imports alike)."""
    found: dict[str, set[str]] = {}
    for path in sorted(package.glob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
        found[path.name] = names
    return found


def test_the_job_never_imports_the_operator():
    offenders = {f: sorted(n for n in names if n.split(".")[0] == "detectionjob_operator")
                 for f, names in imported_modules(ROOT / "inference").items()}
    assert not {f: n for f, n in offenders.items() if n}


def test_the_operator_loads_neither_torch_nor_ray():
    modules = sorted(p.stem for p in (ROOT / "operator" / "detectionjob_operator").glob("*.py")
                     if not p.stem.startswith("__"))
    code = ("import sys\n" + "".join(f"import detectionjob_operator.{m}\n" for m in modules)
            + "print(sorted({n.split('.')[0] for n in sys.modules} & {'torch', 'torchvision', 'ray', "
              "'pandas', 'pyarrow'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_job_needs_no_operator_dependency():
    """The worker image installs the "job" extra only: no kopf, no prometheus_client."""
    offenders = {f: sorted(n for n in names if n.split(".")[0] in {"kopf", "prometheus_client"})
                 for f, names in imported_modules(ROOT / "inference").items()}
    assert not {f: n for f, n in offenders.items() if n}
