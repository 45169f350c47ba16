"""The detector as a Ray Data stage, importable without torch (the driver never loads torch).

Ray starts each actor with ``OMP_NUM_THREADS`` set to the actor's CPU request, 1 here, and an OpenMP
runtime initialised that way runs the model about 4 % slower even after ``torch.set_num_threads(2)``
(measured in benchmarks/RESULTS.md). The stage sets the variable to the planned thread count before
the actor's first import of torch, then builds the ``Detector``.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from inference.spec import ModelSpec

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa


class DetectStage:
    """Ray Data callable class wrapping ``inference.detector.Detector``."""

    def __init__(self, spec: ModelSpec, device: str = "cpu", num_threads: int | None = None,
                 precision: str = "fp32") -> None:
        if num_threads and "torch" not in sys.modules:
            os.environ["OMP_NUM_THREADS"] = str(num_threads)
        from inference.detector import Detector

        self.detector = Detector(spec, device=device, num_threads=num_threads, precision=precision)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        return self.detector(batch)
