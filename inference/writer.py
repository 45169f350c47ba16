"""The output folder: one Parquet part per shard, the run's settings, the summary, samples.

``part-<shard id>.parquet`` is written where the shard's rows are (by the detector actor), under a
hidden temporary name and renamed on local disks, as one PUT on object stores: a part is either
whole or absent, and a retried shard replaces its part instead of adding rows. The folder reads
directly as a Parquet dataset (``pd.read_parquet(out)``); ``_`` and ``.`` names are skipped.
"""

from __future__ import annotations

import contextlib
import io
import json
import posixpath
import re
import uuid

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from inference.output_schema import OUTPUT_SCHEMA
from inference.uris import Location

PART_PREFIX = "part-"
SUMMARY_NAME = "_summary.json"
JOB_NAME = "_job.json"  # the settings of the run that wrote the parts (checked by --resume)
SAMPLES_DIR = "_samples"
ATTEMPTS_DIR = "_attempts"  # one small JSON per shard in progress: how often it was started
_SHARD_PART = re.compile(r"^part-([0-9a-f]{16})\.parquet$")


def part_path(out: Location, shard: str) -> str:
    return out.join(f"{PART_PREFIX}{shard}.parquet")


def existing_parts(out: Location) -> list[str]:
    """Our Parquet part files already in the output folder (one listing, O(parts))."""
    selector = pafs.FileSelector(out.path, recursive=False, allow_not_found=True)
    return sorted(
        f.path
        for f in out.fs.get_file_info(selector)
        if f.type == pafs.FileType.File
        and f.base_name.startswith(PART_PREFIX)
        and f.base_name.endswith(".parquet")
    )


def finished_shards(out: Location) -> frozenset[str]:
    """Ids of the shards that have a part (what ``--resume`` skips)."""
    names = (posixpath.basename(p) for p in existing_parts(out))
    return frozenset(m.group(1) for m in map(_SHARD_PART.match, names) if m)


def publish(out: Location, path: str, data: bytes) -> str:
    """Write ``data`` to ``path`` so that readers see all of it or nothing: a hidden temporary name
    and a rename on local disks, one PUT on object stores."""
    if out.scheme == "":
        folder, name = posixpath.split(path)
        out.fs.create_dir(folder, recursive=True)
        tmp = posixpath.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
        with out.fs.open_output_stream(tmp) as sink:
            sink.write(data)
        out.fs.move(tmp, path)
    else:
        with out.fs.open_output_stream(path) as sink:
            sink.write(data)
    return path


def write_part(out: Location, shard: str, table: pa.Table) -> str:
    """Publish a shard's rows atomically; returns the part's path."""
    buffer = io.BytesIO()
    pq.write_table(table.cast(OUTPUT_SCHEMA), buffer, compression="zstd")
    return publish(out, part_path(out, shard), buffer.getvalue())


def attempt_path(out: Location, shard: str) -> str:
    return out.join(ATTEMPTS_DIR, f"{shard}.json")


def clear_attempt(out: Location, shard: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        out.fs.delete_file(attempt_path(out, shard))


def remove_attempts_folder(out: Location) -> None:
    """Delete the markers' folder once no shard is in progress (every marker was cleared)."""
    folder = out.join(ATTEMPTS_DIR)
    if out.fs.get_file_info(folder).type != pafs.FileType.Directory:
        return
    if not out.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
        out.fs.delete_dir(folder)


def read_part(out: Location, shard: str) -> pa.Table:
    return pq.read_table(part_path(out, shard), filesystem=out.fs)


def remove_stale(out: Location, seen: set[str]) -> int:
    """Delete parts of shards this run's input no longer has (the bucket changed since), and
    temporary parts of writers that were killed mid-write."""
    selector = pafs.FileSelector(out.path, recursive=False, allow_not_found=True)
    for info in out.fs.get_file_info(selector):
        if info.base_name.startswith(f".{PART_PREFIX}") and info.base_name.endswith(".tmp"):
            out.fs.delete_file(info.path)
    removed = 0
    for part in existing_parts(out):
        m = _SHARD_PART.match(posixpath.basename(part))
        if m is None or m.group(1) not in seen:
            out.fs.delete_file(part)
            removed += 1
    return removed


def clear_outputs(out: Location) -> int:
    """Delete the files an earlier run wrote (parts, settings, summary, samples); nothing else."""
    removed = 0
    for part in existing_parts(out):
        out.fs.delete_file(part)
        removed += 1
    for name in (SUMMARY_NAME, JOB_NAME):
        if out.fs.get_file_info(out.join(name)).type == pafs.FileType.File:
            out.fs.delete_file(out.join(name))
    for folder in (SAMPLES_DIR, ATTEMPTS_DIR):
        if out.fs.get_file_info(out.join(folder)).type == pafs.FileType.Directory:
            out.fs.delete_dir(out.join(folder))
    return removed


def write_json(out: Location, name: str, payload: dict) -> str:
    return publish(out, out.join(name), (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def read_json(out: Location, name: str) -> dict | None:
    path = out.join(name)
    if out.fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with out.fs.open_input_stream(path) as f:
        return json.loads(f.read())
