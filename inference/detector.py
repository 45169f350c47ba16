"""The detector: a Ray Data actor that loads the model once and detects a batch per call."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import torch

from inference.allocator import keep_freed_memory
from inference.efficiency import BusyClock
from inference.models import ModelConfig, build_model
from inference.output_schema import OUTPUT_SCHEMA


def _nested_lists(values: np.ndarray, counts: list[int], mask: np.ndarray, width: int = 0) -> pa.Array:
    """``list<T>`` (or ``list<list<T>>`` of ``width``) per image from concatenated values."""
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    flat = pa.array(values.reshape(-1))
    if width:
        inner_offsets = pa.array(np.arange(0, len(flat) + 1, width, dtype=np.int32))
        flat = pa.ListArray.from_arrays(inner_offsets, flat)
    return pa.ListArray.from_arrays(offsets, flat, mask=pa.array(mask))


class Detector:
    """Ray Data callable class: heavy setup in ``__init__``, one batch per ``__call__``."""

    def __init__(self, spec: ModelConfig, device: str = "cpu", num_threads: int | None = None,
                 precision: str = "fp32") -> None:
        keep_freed_memory()  # each batch reuses the last one's memory instead of faulting it in again
        if num_threads:
            torch.set_num_threads(num_threads)
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        self.device = torch.device(device)
        self.spec = spec
        model, self.categories = build_model(spec)
        self.model = model.to(self.device)
        self.categories_array = np.asarray(self.categories, dtype=object)
        self.autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        self.clock = BusyClock(self.device)  # time in the forward pass (inference.efficiency)

    def _tensor(self, image: np.ndarray) -> torch.Tensor:
        """uint8 HWC -> float CHW in [0, 1], converted on the device (uint8 is what travels)."""
        t = torch.from_numpy(np.asarray(image))
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        return t.permute(2, 0, 1).float().div_(255.0)

    def detect(self, images: list[np.ndarray]) -> list[dict[str, torch.Tensor]]:
        """Plain model outputs for ``images`` (boxes in original pixel coordinates)."""
        if not images:
            return []
        tensors = [self._tensor(image) for image in images]
        self.clock.start()
        try:
            with torch.inference_mode():
                if self.autocast_dtype is not None:
                    with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                        return self.model(tensors)
                return self.model(tensors)
        finally:
            self.clock.stop()

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        # Ray's block conversion may turn an all-null column into NaNs: only strings are errors.
        errors = [e if isinstance(e, str) else None for e in batch["error"]]
        ok = [i for i, e in enumerate(errors) if e is None]
        outputs = self.detect([batch["image"][i] for i in ok])
        n = len(errors)
        per_row: list[dict[str, np.ndarray] | None] = [None] * n
        threshold = self.spec.score_threshold
        for i, out in zip(ok, outputs, strict=True):
            keep = out["scores"] >= threshold
            per_row[i] = {k: out[k][keep].float().cpu().numpy() if k != "labels"
                          else out[k][keep].cpu().numpy() for k in ("boxes", "scores", "labels")}
        counts = [0 if r is None else len(r["scores"]) for r in per_row]
        mask = np.asarray([r is None for r in per_row])
        rows = [r for r in per_row if r is not None]

        def cat(key: str, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
            parts = [r[key].astype(dtype) for r in rows]
            return np.concatenate(parts) if parts else np.zeros(shape, dtype=dtype)

        labels = cat("labels", np.int32, (0,))
        names = self.categories_array[labels] if len(labels) else np.zeros(0, dtype=object)
        columns = {
            "path": pa.array(list(batch["path"]), pa.string()),
            "width": pa.array(np.asarray(batch["width"], dtype=np.int32)),
            "height": pa.array(np.asarray(batch["height"], dtype=np.int32)),
            "boxes": _nested_lists(cat("boxes", np.float32, (0, 4)), counts, mask, width=4),
            "scores": _nested_lists(cat("scores", np.float32, (0,)), counts, mask),
            "labels": _nested_lists(labels, counts, mask),
            "label_names": _nested_lists(names.astype(object), counts, mask),
            "model": pa.array([self.spec.name] * n, pa.string()),
            "error": pa.array(errors, pa.string()),
        }
        return pa.table(columns).cast(OUTPUT_SCHEMA)
