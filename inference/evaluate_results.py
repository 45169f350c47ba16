"""Read a job's results for ``detectionjob evaluate``: the Parquet rows as numpy columns.

Only the columns evaluation needs are read (``path``, ``boxes``, ``scores``, ``label_names``,
``error``; :mod:`inference.output_schema`), and flattened with pyarrow: one entry per image row and
one per detection, no per-row Python.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from inference.output_schema import OUTPUT_SCHEMA
from inference.uris import Location
from inference.writer import SUMMARY_NAME, existing_parts, read_json

OPTION = "--results"
COLUMNS = ("path", "boxes", "scores", "label_names", "error")


class ResultsError(ValueError):
    """Results that cannot be evaluated; the message names the file and the column."""


@dataclass(frozen=True)
class Results:
    """Image rows and their detections (detection ``i`` belongs to row ``row[i]``)."""

    paths: pa.Array  # string, per row
    failed: np.ndarray  # bool, per row: an error row (no detections)
    row: np.ndarray  # int64, per detection
    boxes: np.ndarray  # float64 (N, 4): x1, y1, x2, y2
    scores: np.ndarray  # float64
    labels: pa.Array  # string, per detection: the model's label name

    @property
    def names(self) -> pa.Array:
        """Each row's file name: the last component of its path."""
        return pc.replace_substring_regex(self.paths, pattern=r"^.*/", replacement="")


def folder(results: Location) -> Location:
    """The results folder (the folder of ``--results`` when that is one Parquet file)."""
    if results.path.endswith(".parquet"):
        return Location(results.fs, posixpath.dirname(results.path), results.scheme, results.options)
    return results


def read_results(results: Location) -> Results:
    """Every part of a job's output folder (or one Parquet file) as :class:`Results`."""
    parts = [results.path] if results.path.endswith(".parquet") else _parts(results)
    if not parts:
        raise ResultsError(f"{OPTION}: no part-*.parquet files under {results.uri(results.path)!r} "
                           "(expected a detectionjob run's --output)")
    table = pa.concat_tables([_read_part(results, part) for part in parts]).combine_chunks()
    return _columns(table, results.uri(results.path))


def _parts(results: Location) -> list[str]:
    try:
        return existing_parts(results)
    except OSError as exc:
        raise ResultsError(f"{OPTION}: {results.uri(results.path)}: cannot be listed: {exc}") from None


def _read_part(results: Location, path: str) -> pa.Table:
    """Our columns of one part, cast to the job's schema; a file without one names the column."""
    uri = results.uri(path)
    try:
        with results.fs.open_input_file(path) as f:
            parquet = pq.ParquetFile(f)
            names = parquet.schema_arrow.names
            missing = [c for c in COLUMNS if c not in names]
            if missing:
                raise ResultsError(f"{OPTION}: {uri} is not a detectionjob result: no column {missing[0]!r} "
                                   f"(expected {', '.join(COLUMNS)}, ...; see the README's output schema)")
            table = parquet.read(columns=list(COLUMNS))
    except (OSError, pa.ArrowInvalid) as exc:
        raise ResultsError(f"{OPTION}: {uri}: cannot be read as Parquet: {exc}") from None
    return pa.table([_cast(table.column(c), c, uri) for c in COLUMNS], names=list(COLUMNS))


def _cast(column: pa.ChunkedArray, name: str, uri: str) -> pa.ChunkedArray:
    wanted = OUTPUT_SCHEMA.field(name).type
    try:
        return column.cast(wanted)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise ResultsError(f"{OPTION}: {uri} is not a detectionjob result: column {name!r} is "
                           f"{column.type}, expected {wanted}") from None


def _columns(table: pa.Table, uri: str) -> Results:
    paths = table.column("path").chunk(0) if table.num_rows else pa.array([], pa.string())
    failed = table.column("error").is_valid().to_numpy(zero_copy_only=False)
    lengths = {c: pc.list_value_length(table.column(c)).fill_null(0).to_numpy() for c in
               ("boxes", "scores", "label_names")}
    if not (np.array_equal(lengths["boxes"], lengths["scores"])
            and np.array_equal(lengths["boxes"], lengths["label_names"])):
        at = int(np.flatnonzero((lengths["boxes"] != lengths["scores"])
                                | (lengths["boxes"] != lengths["label_names"]))[0])
        raise ResultsError(f"{OPTION}: {uri}: the row of {paths[at].as_py()} has "
                           f"{lengths['boxes'][at]} boxes, {lengths['scores'][at]} scores and "
                           f"{lengths['label_names'][at]} label_names")
    box_lists = pc.list_flatten(table.column("boxes"))
    if len(box_lists) and pc.any(pc.not_equal(pc.list_value_length(box_lists), 4)).as_py():
        raise ResultsError(f"{OPTION}: {uri}: a box is not [x1, y1, x2, y2]")
    coords = pc.list_flatten(box_lists).to_numpy().astype(np.float64).reshape(-1, 4)
    return Results(
        paths=paths, failed=failed,
        row=np.repeat(np.arange(table.num_rows, dtype=np.int64), lengths["boxes"]),
        boxes=coords,
        scores=pc.list_flatten(table.column("scores")).to_numpy().astype(np.float64),
        labels=pc.list_flatten(table.column("label_names")).combine_chunks()
        if table.num_rows else pa.array([], pa.string()),
    )


def score_threshold(results: Location) -> float | None:
    """The ``score_threshold`` in ``_summary.json`` beside the results, if there is one."""
    where = folder(results)
    try:
        summary = read_json(where, SUMMARY_NAME)
    except (OSError, ValueError):  # unreadable: the threshold is unknown, as without the file
        return None
    value = (summary or {}).get("score_threshold")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

