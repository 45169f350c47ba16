"""The detector: a Ray Data actor that loads the model once and detects a batch per call."""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import pyarrow as pa
import torch

from inference.allocator import keep_freed_memory
from inference.efficiency import BusyClock
from inference.models import ModelConfig, build_model
from inference.options import AUTO_BATCH_CAP, AUTO_BATCH_CPU
from inference.output_schema import OUTPUT_SCHEMA

log = logging.getLogger(__name__)
OutOfMemory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}  # --precision; fp32: no autocast
AUTO_BATCH_MEMORY = 0.8  # `--batch-size auto` stops at a batch whose peak takes more of the GPU


def _nested_lists(values: np.ndarray, counts: list[int], mask: np.ndarray, width: int = 0) -> pa.Array:
    """``list<T>`` (or ``list<list<T>>`` of ``width``) per image from concatenated values."""
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    flat = pa.array(values.reshape(-1))
    if width:
        inner_offsets = pa.array(np.arange(0, len(flat) + 1, width, dtype=np.int32))
        flat = pa.ListArray.from_arrays(inner_offsets, flat)
    return pa.ListArray.from_arrays(offsets, flat, mask=pa.array(mask))


def largest_fitting(peak: Callable[[int], int | None], cap: int, bound: float) -> int:
    """The largest power of two ``n <= cap`` whose pass fits (``peak(n)``: its peak memory, None
    when it ran out) within ``bound`` bytes; 1 if none does. From the top down: on a large GPU the
    first pass is the answer (doubling from 1 took seven passes, 6-8 s, on an H200)."""
    n = 1 << (max(cap, 1).bit_length() - 1)
    while n > 1:
        used = peak(n)
        if used is not None and used <= bound:
            return n
        n //= 2
    return 1


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
        if self.device.type == "cuda":  # NHWC convolutions: +11-13 % with --streams (benchmarks/RESULTS.md)
            self.model = self.model.to(memory_format=torch.channels_last)
        self.categories_array = np.asarray(self.categories, dtype=object)
        self.autocast_dtype = AUTOCAST_DTYPES.get(precision)
        self.clock = BusyClock(self.device)  # time in the forward pass (inference.efficiency)
        self.batch_limit: int | None = None  # set by a CUDA out-of-memory: never more images at once
        self._local = threading.local()  # each calling thread's CUDA stream

    def stream(self) -> AbstractContextManager:
        """The calling thread's own CUDA stream, made current (a no-op on a CPU): batches detected
        by several threads at once (``--streams``) overlap on the GPU, one batch's kernels running
        while another's thread launches or waits on the CPU."""
        if self.device.type != "cuda":
            return nullcontext()
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = torch.cuda.Stream(self.device)
        return torch.cuda.stream(stream)

    def _tensor(self, image: np.ndarray) -> torch.Tensor:
        """uint8 HWC -> float CHW in [0, 1], converted on the device (uint8 is what travels). Each
        image is copied to page-locked memory from torch's pinned-block cache, then to the GPU
        asynchronously: measured on an H200, as fast as packing a batch into one reusable pinned
        buffer (1.0 against 1.2 ms for 16 VOC-sized images; benchmarks/RESULTS.md)."""
        t = torch.from_numpy(np.asarray(image))
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        return t.permute(2, 0, 1).float().div_(255.0)

    def _forward(self, images: list[np.ndarray]) -> list[dict[str, torch.Tensor]]:
        with self.stream():
            tensors = [self._tensor(image) for image in images]
            token = self.clock.start()
            try:
                with torch.inference_mode():
                    if self.autocast_dtype is not None:
                        with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                            return self.model(tensors)
                    return self.model(tensors)
            finally:
                self.clock.stop(token)

    def _release(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _halving(self, images: list[np.ndarray]) -> list[dict[str, torch.Tensor] | None]:
        """Outputs of ``images``; a device out of memory halves the batch and tries the halves, and
        later batches are cut to the size that fit. An image that does not fit even alone gets None
        (and leaves the batch size as it was: that image, not the batch, was too large)."""
        try:
            return self._forward(images)
        except OutOfMemory as exc:
            message = str(exc).splitlines()[0] if str(exc) else "out of memory"
        # Out of the except block: the failed pass's tensors (held by the traceback) are freed.
        self._release()
        if len(images) == 1:
            log.warning("detector: one image does not fit the device even alone: %s", message)
            return [None]
        before, half = self.batch_limit, (len(images) + 1) // 2
        self.batch_limit = half if before is None else min(before, half)
        outputs = self._halving(images[:half]) + self._halving(images[half:])
        if any(out is None for out in outputs):
            self.batch_limit = before
        elif self.batch_limit != before:
            log.warning("detector: %d images at once ran the device out of memory; batches of at most "
                        "%d from now on (%s)", len(images), self.batch_limit, message)
        return outputs

    def detect(self, images: list[np.ndarray]) -> list[dict[str, torch.Tensor] | None]:
        """Plain model outputs for ``images`` (boxes in original pixel coordinates); None for an
        image the device has no memory for even alone."""
        outputs: list[dict[str, torch.Tensor] | None] = []
        while len(outputs) < len(images):  # the limit may drop on the way: each cut takes it anew
            step = self.batch_limit or len(images)
            outputs += self._halving(images[len(outputs):len(outputs) + step])
        return outputs

    def largest_batch(self, cap: int = AUTO_BATCH_CAP, size: tuple[int, int] = (375, 500),
                      streams: int = 1) -> int:
        """``--batch-size auto``: the largest power of two (at most ``cap``) of VOC-sized images whose
        forward pass fits the device and takes at most :data:`AUTO_BATCH_MEMORY` of it, shared by
        ``streams`` passes at once; larger images later are what the out-of-memory halving is for.
        On a CPU: :data:`AUTO_BATCH_CPU`."""
        if self.device.type != "cuda":
            return AUTO_BATCH_CPU
        total = torch.cuda.get_device_properties(self.device).total_memory
        rng = np.random.default_rng(0)

        def peak(n: int) -> int | None:
            images = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]
            torch.cuda.reset_peak_memory_stats(self.device)
            try:
                self._forward(images)
                torch.cuda.synchronize(self.device)
            except OutOfMemory:
                return None
            finally:
                self._release()
            return torch.cuda.max_memory_allocated(self.device)

        best = largest_fitting(peak, cap, AUTO_BATCH_MEMORY * total / streams)
        self.clock.reset()  # the probe is not the job's busy time
        log.info("detector: --batch-size auto chose %d", best)
        return best

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        with self.stream():  # the outputs are copied off the device on the stream that made them
            return self._rows(batch)

    def _rows(self, batch: dict[str, np.ndarray]) -> pa.Table:
        # Ray's block conversion may turn an all-null column into NaNs: only strings are errors.
        errors = [e if isinstance(e, str) else None for e in batch["error"]]
        ok = [i for i, e in enumerate(errors) if e is None]
        outputs = self.detect([batch["image"][i] for i in ok])
        n = len(errors)
        threshold = self.spec.score_threshold
        kept: list[dict[str, torch.Tensor]] = []
        counts = [0] * n
        mask = np.ones(n, dtype=bool)  # no result (an error row)
        for i, out in zip(ok, outputs, strict=True):
            if out is None:
                errors[i] = "OutOfMemory: the image does not fit the device even alone"
                continue
            keep = out["scores"] >= threshold
            kept.append({k: out[k][keep] for k in ("boxes", "scores", "labels")})
            counts[i], mask[i] = len(kept[-1]["scores"]), False

        def cat(key: str, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
            """One copy off the device for the whole batch, not one per image."""
            if not kept:
                return np.zeros(shape, dtype=dtype)
            values = torch.cat([k[key] for k in kept])
            return (values.float() if values.is_floating_point() else values).cpu().numpy().astype(dtype)

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
