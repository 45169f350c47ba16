"""How well a run used its devices: the numbers that decide what a batch job costs, and one
sentence on where the detectors' time went.

* ``device_seconds``: every detector actor's lifetime (from the start of its set-up, model load
  included, to its last heartbeat, every :data:`HEARTBEAT` s, or the end of the run) times the
  devices it holds (its GPUs; a CPU actor counts as one device).
* ``busy_seconds``: time inside the model's forward pass, measured per mini-batch (CUDA events on
  a GPU, a monotonic clock on a CPU), passes that overlap (``--streams``) counted once;
  ``input_wait_seconds``: time a detector waited for its next mini-batch to be read and decoded.
* ``busy_fraction`` and ``input_wait_fraction`` of ``device_seconds``, ``images_per_device_hour``,
  ``seconds_to_first_detection``, ``estimated_cost`` (with ``--cost-per-device-hour``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

HEARTBEAT = 5.0  # seconds between a detector's "still here" to the tally
MODEL_BOUND = 0.3  # computing this much of their time (and waiting less): the model is the bottleneck
INPUT_BOUND = 0.2  # waiting this much of their time (and more than computing): reading and decoding is


class BusyClock:
    """Seconds during which at least one forward pass ran on ``device`` (``torch.device``): passes
    on several streams at once (``--streams``) count their overlap once. On a GPU, CUDA events around
    each pass are read once they have happened (at the next :meth:`start` or when :meth:`total` is
    asked), so timing never adds a synchronisation to the pipeline. Thread-safe."""

    def __init__(self, device: Any) -> None:
        self.cuda = getattr(device, "type", str(device)) == "cuda"
        self.seconds = 0.0  # spans no pass still to be read can overlap, summed
        self._lock = threading.Lock()
        self._open: list[list[Any]] = []  # passes not read yet: [begin, end or None while running]
        self._spans: list[tuple[float, float]] = []  # read, merged, not yet summed
        self._origin: Any = None  # CUDA: the event that times are measured from

    def _mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        import torch

        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _time(self, mark: Any) -> float | None:
        """Seconds since the origin; None for an event the device has not reached yet."""
        if not self.cuda:
            return mark
        if not (mark.query() and self._origin.query()):
            return None
        return self._origin.elapsed_time(mark) / 1000.0

    def start(self) -> list[Any]:
        """A pass begins (on this thread's current stream); the token :meth:`stop` takes."""
        with self._lock:
            if self.cuda and self._origin is None:
                self._origin = self._mark()
            self._collect()
            token = [self._mark(), None]
            self._open.append(token)
        return token

    def stop(self, token: list[Any]) -> None:
        token[1] = self._mark()

    def reset(self) -> None:
        """Forget the passes so far (a probe's, before the job's own)."""
        with self._lock:
            self.seconds, self._open, self._spans = 0.0, [], []

    def _collect(self, wait: bool = False) -> None:
        running, spans = [], list(self._spans)
        for token in self._open:
            begin, end = token
            if end is not None and wait and self.cuda:
                end.synchronize()
            times = None if end is None else (self._time(begin), self._time(end))
            if times is None or None in times:
                running.append(token)
            else:
                spans.append(times)
        merged: list[tuple[float, float]] = []
        for b, e in sorted(spans):
            if merged and b <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((b, e))
        # A pass still open began after every read span ended unless its begin is known: only
        # spans ending before the earliest known begin are final.
        begins = [t for t in (self._time(token[0]) for token in running) if t is not None]
        horizon = min(begins, default=float("inf"))
        self.seconds += sum(e - b for b, e in merged if e <= horizon)
        self._spans = [(b, e) for b, e in merged if e > horizon]
        self._open = running

    def total(self) -> float:
        """All the busy seconds of the passes that have stopped (on a GPU, once they have ended)."""
        with self._lock:
            self._collect(wait=True)
            return self.seconds + sum(e - b for b, e in self._spans)


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
