"""Running totals of a job from the per-shard count rows: O(shards) ids and K samples, no rows."""

from __future__ import annotations

import collections
import json
import time
from dataclasses import dataclass, field

import pyarrow as pa

from inference.sampling import merge

MAX_EXAMPLE_ERRORS = 5


@dataclass
class Summary:
    """Accumulates the detector stage's count rows; :meth:`as_dict` is most of ``_summary.json``."""

    samples: int = 0
    started: float = field(default_factory=time.monotonic)
    listed: int = 0
    skipped: int = 0
    images: int = 0
    failed: int = 0
    detections: int = 0
    per_class: collections.Counter = field(default_factory=collections.Counter)
    seen: set[str] = field(default_factory=set)  # shard ids: what this run's input holds
    candidates: list[dict] = field(default_factory=list)
    example_errors: list[str] = field(default_factory=list)
    parts: int = 0
    timed_out: int = 0
    threads: set[int] = field(default_factory=set)  # torch threads of the actors that detected
    batch_sizes: set[int] = field(default_factory=set)  # their batch sizes (``--batch-size auto``)
    busy_seconds: float = 0.0  # in the detectors' forward passes
    wait_seconds: float = 0.0  # detectors waiting for their next mini-batch

    def add(self, stats: pa.Table) -> None:
        for row in stats.to_pylist():
            if row["shard"] in self.seen:  # a re-run read task lists a shard twice: count it once
                continue
            self.seen.add(row["shard"])
            self.listed += row["listed"]
            self.skipped += row["skipped"]
            self.images += row["images"]
            self.failed += row["failed"]
            self.detections += row["detections"]
            self.parts += row["images"] > 0
            self.timed_out += row.get("timed_out") or 0
            self.busy_seconds += row.get("busy_seconds") or 0.0
            self.wait_seconds += row.get("wait_seconds") or 0.0
            if row["images"] and row.get("torch_threads"):
                self.threads.add(row["torch_threads"])
            if row["images"] and row.get("batch_size"):
                self.batch_sizes.add(row["batch_size"])
            self.per_class.update(json.loads(row["per_class"]))
            if row["first_error"] and len(self.example_errors) < MAX_EXAMPLE_ERRORS:
                self.example_errors.append(row["first_error"])
            if self.samples:
                self.candidates = merge(self.candidates, json.loads(row["samples"]), self.samples)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def as_dict(self) -> dict:
        wall = self.elapsed
        return {
            "images": self.images,
            "failed_images": self.failed,
            "detections": self.detections,
            "per_class": dict(sorted(self.per_class.items(), key=lambda kv: (-kv[1], kv[0]))),
            "listed_images": self.listed,
            "skipped_existing": self.skipped,
            "shards": len(self.seen),
            "parts_written": self.parts,
            "example_errors": self.example_errors,
            "timed_out_images": self.timed_out,
            "torch_threads_used": sorted(self.threads),
            "batch_sizes_used": sorted(self.batch_sizes),
            "wall_seconds": round(wall, 3),
            "images_per_second": round(self.images / wall, 3) if wall > 0 else 0.0,
        }

