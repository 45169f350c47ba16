"""Running totals for a job: images, failures, detections, per-class counts, throughput."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc


@dataclass
class Summary:
    """Accumulates result tables; :meth:`as_dict` is what ``_summary.json`` holds."""

    total: int
    started: float = field(default_factory=time.monotonic)
    images: int = 0
    failed: int = 0
    detections: int = 0
    per_class: collections.Counter = field(default_factory=collections.Counter)

    def add(self, table: pa.Table) -> None:
        self.images += table.num_rows
        self.failed += table.num_rows - table.column("error").null_count
        names = pc.list_flatten(table.column("label_names"))
        self.detections += len(names)
        if len(names):
            counts = pc.value_counts(names)
            for item in counts.to_pylist():
                self.per_class[item["values"]] += item["counts"]

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def progress_line(self) -> str:
        rate = self.images / self.elapsed if self.elapsed > 0 else 0.0
        pct = 100.0 * self.images / self.total if self.total else 100.0
        eta = (self.total - self.images) / rate if rate > 0 else float("nan")
        return (
            f"[detectionjob] {self.images}/{self.total} images ({pct:.1f}%), "
            f"{self.failed} failed, {self.detections} detections, {rate:.2f} images/s, ETA {eta:.0f}s"
        )

    def as_dict(self) -> dict:
        wall = self.elapsed
        return {
            "images": self.images,
            "failed_images": self.failed,
            "detections": self.detections,
            "per_class": dict(sorted(self.per_class.items(), key=lambda kv: (-kv[1], kv[0]))),
            "wall_seconds": round(wall, 3),
            "images_per_second": round(self.images / wall, 3) if wall > 0 else 0.0,
        }
