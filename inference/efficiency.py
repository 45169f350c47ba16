"""How well a run used its devices: the numbers that decide what a batch job costs, and one
sentence on where the detectors' time went.

* ``device_seconds``: every detector actor's lifetime (from the start of its set-up, model load
  included, to its last heartbeat, every :data:`HEARTBEAT` s, or the end of the run) times the
  devices it holds (its GPUs; a CPU actor counts as one device).
* ``busy_seconds``: time inside the model's forward pass, measured per mini-batch (CUDA events on
  a GPU, a monotonic clock on a CPU); ``input_wait_seconds``: time a detector waited for its next
  mini-batch to be read and decoded.
* ``busy_fraction`` and ``input_wait_fraction`` of ``device_seconds``, ``images_per_device_hour``,
  ``seconds_to_first_detection``, ``estimated_cost`` (with ``--cost-per-device-hour``).
"""

from __future__ import annotations

import time
from typing import Any

HEARTBEAT = 5.0  # seconds between a detector's "still here" to the tally
MODEL_BOUND = 0.3  # computing this much of their time (and waiting less): the model is the bottleneck
INPUT_BOUND = 0.2  # waiting this much of their time (and more than computing): reading and decoding is


class BusyClock:
    """Seconds inside the forward pass on ``device`` (``torch.device``). On a GPU, CUDA events
    around each pass are read once the next pass starts or :meth:`total` is asked, so timing
    never adds a synchronisation to the pipeline."""

    def __init__(self, device: Any) -> None:
        self.cuda = getattr(device, "type", str(device)) == "cuda"
        self.seconds = 0.0
        self._pending: list[tuple[Any, Any]] = []
        self._t0 = 0.0

    def start(self) -> None:
        if self.cuda:
            import torch

            self._collect()
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            self._pending.append((begin, end))
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            self._pending[-1][1].record()
        else:
            self.seconds += time.perf_counter() - self._t0

    def reset(self) -> None:
        """Forget the passes so far (a probe's, before the job's own)."""
        self.seconds, self._pending = 0.0, []

    def _collect(self, wait: bool = False) -> None:
        kept = []
        for begin, end in self._pending:
            if wait:
                end.synchronize()
            if end.query():
                self.seconds += begin.elapsed_time(end) / 1000.0
            else:
                kept.append((begin, end))
        self._pending = kept

    def total(self) -> float:
        """All the busy seconds so far (on a GPU, after the passes in flight have ended)."""
        if self.cuda:
            self._collect(wait=True)
        return self.seconds


def device_seconds(actors: dict[Any, dict], now: float) -> float:
    """Σ lifetime × devices of the tally's detector actors (``started``, ``last``, ``devices``)."""
    total = 0.0
    for actor in actors.values():
        ended = min(now, actor["last"] + HEARTBEAT)
        total += max(0.0, ended - actor["started"]) * actor["devices"]
    return total


def device_use(device_s: float, busy_s: float, wait_s: float, images: int,
               first_detection_s: float | None, cost_per_device_hour: float | None) -> dict:
    """The summary's numbers and sentence (a run that started no detector has none)."""
    if device_s <= 0:
        return {"device_seconds": 0.0, "seconds_to_first_detection": first_detection_s}
    busy, wait = busy_s / device_s, wait_s / device_s
    use = {
        "device_seconds": round(device_s, 3),
        "busy_seconds": round(busy_s, 3),
        "input_wait_seconds": round(wait_s, 3),
        "busy_fraction": round(busy, 4),
        "input_wait_fraction": round(wait, 4),
        "images_per_device_hour": round(images / (device_s / 3600.0), 1),
        "seconds_to_first_detection": first_detection_s,
        "advice": advice(busy, wait),
    }
    if cost_per_device_hour is not None:
        use["estimated_cost"] = round(device_s / 3600.0 * cost_per_device_hour, 4)
    return use


def advice(busy: float, wait: float) -> str:
    """One sentence a user can act on, from where the detectors' time went."""
    split = (f"the detectors computed {busy:.0%} of their device time and waited {wait:.0%} for their "
             "images to be read and decoded")
    if wait > busy and wait >= INPUT_BOUND:
        return (f"input-bound: {split}; give each GPU more CPUs to read and decode with "
                "(spec.workers.cpusPerWorker), or a larger --batch-size so more images are read at once")
    if busy >= MODEL_BOUND:
        return (f"model-bound: {split}; a larger --batch-size or reduced --precision (fp16/bf16 on a "
                "GPU) would speed it up")
    return (f"mostly idle: {split}; the rest went to start-up, listing and the end of the run: more "
            "images per run would use the devices better")
