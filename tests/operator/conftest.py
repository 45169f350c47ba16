"""The operator's test fixtures; helpers live in djtest.py (this folder goes on sys.path)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from djtest import kuberay_rayjob_schema  # noqa: E402,F401  (a fixture)
