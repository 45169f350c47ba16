"""Pick the images to draw while results stream by: a bottom-K sample, bounded memory.

Every detected image gets a rank: images with boxes first, then a hash of the path. Each shard
keeps its K lowest ranks; the driver merges them keeping the K lowest overall. The result is the
same K images whatever the shards, actors or order (a uniform sample among images with boxes),
and no step holds more than K candidate rows.
"""

from __future__ import annotations

import hashlib
import heapq

import pyarrow as pa
import pyarrow.compute as pc

FIELDS = ("path", "boxes", "scores", "labels", "label_names")


def rank(path: str, boxes: int) -> tuple[int, str]:
    return (0 if boxes else 1, hashlib.blake2b(path.encode(), digest_size=8).hexdigest())


def candidates(table: pa.Table, k: int) -> list[dict]:
    """The ``k`` best sample rows of a result table (detected images only)."""
    if k <= 0 or table.num_rows == 0:
        return []
    ok = table.filter(pc.is_null(table.column("error"))).select(list(FIELDS))
    rows = ok.to_pylist()
    for row in rows:
        row["rank"] = list(rank(row["path"], len(row["boxes"] or [])))
    return heapq.nsmallest(k, rows, key=lambda r: tuple(r["rank"]))


def merge(kept: list[dict], more: list[dict], k: int) -> list[dict]:
    """The ``k`` best of two candidate lists."""
    return heapq.nsmallest(k, kept + more, key=lambda r: tuple(r["rank"]))
