"""Write result rows as Parquet part files; ``overwrite`` replaces our files, ``resume`` appends."""

from __future__ import annotations

import json
import posixpath
import time
import uuid

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from inference.schema import OUTPUT_SCHEMA
from inference.uris import Location

PART_PREFIX = "part-"
SUMMARY_NAME = "_summary.json"
SAMPLES_DIR = "_samples"  # "_" and "." names are skipped by Parquet dataset readers


def existing_parts(out: Location) -> list[str]:
    """Our Parquet part files already in the output folder."""
    selector = pafs.FileSelector(out.path, recursive=False, allow_not_found=True)
    return sorted(
        f.path
        for f in out.fs.get_file_info(selector)
        if f.type == pafs.FileType.File
        and f.base_name.startswith(PART_PREFIX)
        and f.base_name.endswith(".parquet")
    )


def done_paths(out: Location) -> set[str]:
    """Input URIs that already have a row in the output (for ``--resume``)."""
    paths: set[str] = set()
    for part in existing_parts(out):
        table = pq.read_table(part, columns=["path"], filesystem=out.fs)
        paths.update(table.column("path").to_pylist())
    return paths


def clear_outputs(out: Location) -> int:
    """Delete the files an earlier run wrote (parts, summary, samples); nothing else is touched."""
    removed = 0
    for part in existing_parts(out):
        out.fs.delete_file(part)
        removed += 1
    if out.fs.get_file_info(out.join(SUMMARY_NAME)).type == pafs.FileType.File:
        out.fs.delete_file(out.join(SUMMARY_NAME))
    if out.fs.get_file_info(out.join(SAMPLES_DIR)).type == pafs.FileType.Directory:
        out.fs.delete_dir(out.join(SAMPLES_DIR))
    return removed


class PartWriter:
    """Buffers result tables and rolls them into ``part-<run>-<n>.parquet`` files.

    Local files are written under a hidden temporary name and renamed, so an interrupted run never
    leaves a half-written part for ``--resume`` or a dataset reader to trip over; object stores
    publish on close. The folder reads directly as a Parquet dataset (``pd.read_parquet(out)``).
    """

    def __init__(self, out: Location, rows_per_file: int = 1000, seconds_per_file: float = 120.0):
        self.out = out
        self.rows_per_file = rows_per_file
        self.seconds_per_file = seconds_per_file
        self.run_id = uuid.uuid4().hex[:8]
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.count = 0
        self.files: list[str] = []
        self.started = time.monotonic()
        out.fs.create_dir(out.path, recursive=True)

    def add(self, table: pa.Table) -> None:
        self.buffer.append(table.cast(OUTPUT_SCHEMA))
        self.buffered += table.num_rows
        if self.buffered >= self.rows_per_file or (
            time.monotonic() - self.started > self.seconds_per_file
        ):
            self.flush()

    def flush(self) -> None:
        if not self.buffered:
            return
        table = pa.concat_tables(self.buffer)
        name = self.out.join(f"{PART_PREFIX}{self.run_id}-{self.count:05d}.parquet")
        local = self.out.scheme == ""
        target = self.out.join(f".{posixpath.basename(name)}.tmp") if local else name
        with self.out.fs.open_output_stream(target) as sink:
            pq.write_table(table, sink, compression="zstd")
        if local:
            self.out.fs.move(target, name)
        self.files.append(name)
        self.count += 1
        self.buffer, self.buffered, self.started = [], 0, time.monotonic()

    def write_json(self, name: str, payload: dict) -> str:
        path = self.out.join(name)
        with self.out.fs.open_output_stream(path) as sink:
            sink.write((json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())
        return path
