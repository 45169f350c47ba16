"""The detector as a Ray Data stage, importable without torch: the driver never loads torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from inference.spec import ModelSpec

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa


class DetectStage:
    """Ray Data callable class: imports torch and builds ``inference.detector.Detector`` in the actor."""

    def __init__(self, spec: ModelSpec, device: str = "cpu", num_threads: int | None = None,
                 precision: str = "fp32") -> None:
        from inference.detector import Detector

        self.detector = Detector(spec, device=device, num_threads=num_threads, precision=precision)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        return self.detector(batch)
