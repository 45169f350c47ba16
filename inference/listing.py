"""Stream the input's image URIs, spread over Ray read tasks: never the whole list in one process.

The driver only *plans* the listing (:func:`plan_units`): a handful of units from at most one
directory listing or one page of keys. Each unit is listed by its own read task, one page or one
directory at a time (:func:`iter_uris`), in a deterministic order, and the URIs flow on as shards
(:mod:`inference.shards`) while the listing goes on, so detection starts after the first page.

* local folders: one unit per top-level subfolder (walked recursively, each folder's entries
  sorted) plus one for the files at the top;
* ``s3://``: one unit per top-level "folder" when the first delimiter page holds them all, else one
  unit for the whole prefix; each unit pages through ListObjectsV2 (1,000 keys a request);
* ``gs://``: one unit, listed by pyarrow's GCS filesystem (it has no paged listing);
* a manifest (``--input-list``): one unit, read in record batches (text, CSV, JSON Lines, Parquet).
"""

from __future__ import annotations

import collections
import csv
import io
import json
import os
import posixpath
import stat
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow.fs as pafs

from inference.options import DEFAULT_EXTENSIONS
from inference.store import ATTEMPTS, CONNECT_TIMEOUT, REQUEST_TIMEOUT
from inference.uris import Location, UriError, resolve

MANIFEST_COLUMNS = ("uri", "source-ref", "path", "image", "image_uri", "s3_uri", "gcs_uri")


@dataclass(frozen=True)
class Skip:
    """What the listing leaves out below the input: folders named ``_*`` or ``.*`` (our own
    ``_samples/`` and ``_attempts/``, ``.git``, dataset tools' metadata) unless ``hidden``, and the
    folders in ``paths`` (the job's output, wherever it lies under the input: a re-run must never
    list the results or sample PNGs of the run before). Local paths are compared resolved."""

    paths: frozenset[str] = frozenset()
    hidden: bool = False

    def folder(self, path: str, local: bool) -> bool:
        """Whether to leave out the folder (or S3 common prefix) ``path``."""
        path = path.rstrip("/")
        if not self.hidden and posixpath.basename(path)[:1] in ("_", "."):
            return True
        return bool(self.paths) and (os.path.realpath(path) if local else path) in self.paths

    def key(self, bucket: str, prefix: str, key: str) -> bool:
        """Whether to leave out the S3 object ``key`` of ``bucket`` listed under key ``prefix``."""
        folders = key[len(prefix):].split("/")[:-1]
        if not self.hidden and any(f[:1] in ("_", ".") for f in folders):
            return True
        return any(f"{bucket}/{key}".startswith(p + "/") for p in self.paths)


NO_SKIP = Skip(hidden=True)


@dataclass(frozen=True)
class Unit:
    """One read task's share of the listing."""

    kind: str  # "walk" | "top" | "file" | "s3" | "fs" | "manifest"
    path: str  # a local path, a bucket/key prefix, or the manifest's path
    delimited: bool = False  # "s3": only the keys right under ``path`` (the top-level files)
    column: str | None = None  # "manifest": the column holding the URIs


def _suffixes(extensions: tuple[str, ...]) -> tuple[str, ...]:
    return tuple("." + e for e in extensions)


def s3_client(loc: Location):
    """A boto3 S3 client made with the same settings as ``loc.fs`` (endpoint, region, keys)."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    opts = dict(loc.options)
    kwargs: dict[str, object] = {}
    if opts.get("endpoint_override"):
        kwargs["endpoint_url"] = f"{opts.get('scheme', 'https')}://{opts['endpoint_override']}"
    if opts.get("region"):
        kwargs["region_name"] = opts["region"]
    config = Config(connect_timeout=CONNECT_TIMEOUT, read_timeout=REQUEST_TIMEOUT,
                    retries={"mode": "standard", "max_attempts": ATTEMPTS})
    if opts.get("anonymous"):
        kwargs["config"] = config.merge(Config(signature_version=UNSIGNED))
    else:
        kwargs["config"] = config
        if opts.get("access_key"):
            kwargs.update(aws_access_key_id=opts["access_key"], aws_secret_access_key=opts["secret_key"],
                          aws_session_token=opts.get("session_token"))
    return boto3.session.Session().client("s3", **kwargs)


def _bucket_prefix(path: str) -> tuple[str, str]:
    """``bucket/a/b`` -> ``("bucket", "a/b/")``; ``bucket`` -> ``("bucket", "")``. A folder unit's
    path is its common prefix less the one trailing ``/``, so ``bucket/a/`` (keys ``a//...``) and
    ``bucket/`` (keys ``/...``) keep their own prefix instead of widening to a parent's."""
    bucket, sep, key = path.partition("/")
    return bucket, f"{key}/" if sep else ""


def plan_units(src: Location, option: str = "--input", skip: Skip = NO_SKIP) -> list[Unit]:
    """Split the listing of ``src`` into units; cheap (one directory or one page of keys)."""
    info = src.fs.get_file_info(src.path)
    if info.type == pafs.FileType.File:
        return [Unit("file", src.path)]
    if src.scheme == "":
        if info.type == pafs.FileType.NotFound:
            raise UriError(f"{option}: {src.path!r} does not exist")
        with os.scandir(src.path) as entries:
            dirs = sorted(e.path for e in entries if _is_dir(e) and not skip.folder(e.path, local=True))
        return [Unit("top", src.path), *(Unit("walk", d) for d in dirs)]
    if src.scheme == "s3":
        bucket, prefix = _bucket_prefix(src.path)
        page = s3_client(src).list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="/", MaxKeys=1000)
        if page.get("IsTruncated"):
            return [Unit("s3", src.path)]
        folders = sorted(p["Prefix"][:-1] for p in page.get("CommonPrefixes", [])
                         if not skip.folder(f"{bucket}/{p['Prefix']}", local=False))
        return [Unit("s3", src.path, delimited=True), *(Unit("s3", f"{bucket}/{f}") for f in folders)]
    return [Unit("fs", src.path)]


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _walk(path: str, suffixes: tuple[str, ...], recursive: bool,
          ancestors: frozenset[tuple[int, int]] = frozenset(), skip: Skip = NO_SKIP,
          counts: collections.Counter | None = None) -> Iterator[str]:
    """Files under ``path`` in sorted-entry order, one directory in memory at a time. Symlinked
    folders are followed, but never into a folder being walked already (a link loop). Nothing
    vanishes: a folder that cannot be listed, or a link back into the walk, is yielded itself and
    becomes an error row that says why (:func:`inference.decode.read_bytes`)."""
    try:
        here = _identity(path)
        if here in ancestors:
            yield path  # a link loop: its images are listed once, under the folder it leads to
            return
        ancestors = ancestors | {here}
        with os.scandir(path) as it:
            entries = sorted((e.name, _is_dir(e)) for e in it)
    except (FileNotFoundError, NotADirectoryError):
        return  # gone since its parent was listed
    except OSError:
        yield path  # unreadable (permissions, I/O error, a link cycle the OS refuses)
        return
    for name, is_dir in entries:
        full = os.path.join(path, name)
        if is_dir:
            if recursive and not skip.folder(full, local=True):
                yield from _walk(full, suffixes, True, ancestors, skip, counts)
        elif name.lower().endswith(suffixes):
            yield full
        elif counts is not None:
            counts["other_files"] += 1


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:  # e.g. a link cycle: then not a folder; with an image suffix it becomes a row
        return False


def _s3_keys(src: Location, unit: Unit, suffixes: tuple[str, ...], skip: Skip = NO_SKIP,
             counts: collections.Counter | None = None) -> Iterator[str]:
    bucket, prefix = _bucket_prefix(unit.path)
    pages = s3_client(src).get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, **({"Delimiter": "/"} if unit.delimited else {}),
        PaginationConfig={"PageSize": 1000})
    for page in pages:
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if key.endswith("/") or skip.key(bucket, prefix, key):
                continue
            if key.lower().endswith(suffixes):
                yield f"s3://{bucket}/{key}"
            elif counts is not None:
                counts["other_files"] += 1


def iter_uris(src: Location, unit: Unit, extensions: tuple[str, ...], skip: Skip = NO_SKIP,
              counts: collections.Counter | None = None) -> Iterator[str]:
    """The URIs of ``unit`` as a stream, in a deterministic order; ``counts["other_files"]`` adds
    up the files seen without an image extension."""
    suffixes = _suffixes(extensions)
    if unit.kind == "file":
        yield src.uri(unit.path)
    elif unit.kind in ("top", "walk"):
        # The input folder is an ancestor of every unit's walk: a link back to it is a loop too.
        root = frozenset() if unit.path == src.path else frozenset({_identity(src.path)})
        yield from _walk(unit.path, suffixes, recursive=unit.kind == "walk", ancestors=root, skip=skip,
                         counts=counts)
    elif unit.kind == "s3":
        yield from _s3_keys(src, unit, suffixes, skip, counts)
    elif unit.kind == "fs":
        selector = pafs.FileSelector(unit.path, recursive=True, allow_not_found=True)
        files = sorted(f.path for f in src.fs.get_file_info(selector)
                       if f.type == pafs.FileType.File and f.path.lower().endswith(suffixes))
        yield from (src.uri(f) for f in files)
    elif unit.kind == "manifest":
        yield from iter_manifest(src, unit.column)
    else:
        raise ValueError(f"unknown listing unit {unit.kind!r}")


def list_images(src: Location, extensions: tuple[str, ...], option: str = "--input",
                skip: Skip = NO_SKIP) -> list[str]:
    """Every image URI under ``src`` (small inputs and tests; the job streams :func:`iter_uris`)."""
    return [u for unit in plan_units(src, option, skip) for u in iter_uris(src, unit, extensions, skip)]


def skip_for(src: Location, out: Location | None, hidden: bool) -> Skip:
    """The :class:`Skip` of a job reading ``src`` and writing ``out``."""
    paths: frozenset[str] = frozenset()
    if out is not None and out.scheme == src.scheme and (src.scheme != "s3" or out.options == src.options):
        paths = frozenset({os.path.realpath(out.path) if out.scheme == "" else out.path.rstrip("/")})
    return Skip(paths, hidden)


# --- manifests -------------------------------------------------------------------------------

def manifest_format(path: str) -> str:
    name = path.lower().rsplit("/", 1)[-1]
    for suffix, fmt in ((".parquet", "parquet"), (".csv", "csv"), (".jsonl", "jsonl"),
                        (".manifest", "jsonl"), (".ndjson", "jsonl")):
        if name.endswith(suffix):
            return fmt
    return "text"


def plan_manifest(manifest: Location, column: str | None, option: str = "--input-list") -> list[Unit]:
    """Check the manifest exists (and has the column), and make its one unit. A local manifest may
    be a named pipe that another program is still writing: the job reads entries as they come."""
    kind = manifest.fs.get_file_info(manifest.path).type
    pipe = manifest.scheme == "" and kind == pafs.FileType.Unknown and stat.S_ISFIFO(
        os.stat(manifest.path).st_mode)
    if kind != pafs.FileType.File and not pipe:
        raise UriError(f"{option}: no file at {manifest.uri(manifest.path)!r}")
    fmt = manifest_format(manifest.path)
    if fmt in ("csv", "parquet"):
        names = _columns(manifest, fmt)
        chosen = column or next((c for c in MANIFEST_COLUMNS if c in names), None)
        if chosen is None and len(names) == 1:
            if fmt == "csv" and _looks_like_an_image(names[0]):  # no header: the first line is data
                return [Unit("manifest", manifest.path, column=None)]
            chosen = names[0]
        if chosen not in names:
            raise UriError(f"{option}: {manifest.uri(manifest.path)!r} has no column "
                           f"{chosen or ' or '.join(MANIFEST_COLUMNS)!r} (columns: {', '.join(names)}); "
                           "name it with --input-list-column")
        column = chosen
    return [Unit("manifest", manifest.path, column=column)]


def _looks_like_an_image(cell: str) -> bool:
    cell = cell.strip().lower()
    return "://" in cell or cell.endswith(tuple("." + e for e in DEFAULT_EXTENSIONS))


def _columns(manifest: Location, fmt: str) -> list[str]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(manifest.fs.open_input_file(manifest.path)).schema_arrow.names
    with manifest.fs.open_input_stream(manifest.path) as f:
        header = io.TextIOWrapper(f, encoding="utf-8-sig").readline()
    return next(csv.reader([header]), [])


def _absolute(entry: str, manifest: Location) -> str:
    """Entries are URIs or paths; a relative one is taken relative to the manifest's folder
    (normalized: ``./a.jpg`` or ``x/../a.jpg`` would be other, missing keys on S3)."""
    if "://" in entry or entry.startswith("/"):
        return entry
    return manifest.uri(posixpath.normpath(posixpath.join(posixpath.dirname(manifest.path), entry)))


def iter_manifest(manifest: Location, column: str | None) -> Iterator[str]:
    """The manifest's image URIs, read in batches (never the whole file in memory)."""
    fmt = manifest_format(manifest.path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        reader = pq.ParquetFile(manifest.fs.open_input_file(manifest.path))
        for batch in reader.iter_batches(columns=[column], batch_size=10_000):
            yield from (_absolute(v, manifest) for v in batch.column(0).to_pylist() if v)
        return
    # Local files through Python's own reader: it hands on each line as soon as it is there.
    opened = (open(manifest.path, "rb") if manifest.scheme == ""  # noqa: SIM115 - closed below
              else manifest.fs.open_input_stream(manifest.path))
    with opened as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig")
        if fmt == "csv":
            # column None: a one-column CSV without a header (its first line already an image)
            rows = csv.DictReader(text) if column else csv.reader(text)
            for row in rows:
                value = ((row.get(column) if column else (row[0] if row else "")) or "").strip()
                if value:
                    yield _absolute(value, manifest)
            return
        for line in text:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if fmt == "jsonl":
                record = json.loads(line)
                key = column or next((c for c in MANIFEST_COLUMNS if c in record), None)
                value = record.get(key) if key else None
                if not isinstance(value, str):
                    raise UriError(f"--input-list: a JSON line has no {column or 'source-ref'!r} string: "
                                   f"{line[:200]}")
                yield _absolute(value, manifest)
            else:
                yield _absolute(line, manifest)


def sources_for(uri: str, known: dict[str, Location]) -> tuple[Location, str]:
    """The filesystem and path of an image ``uri``: the input's own (its endpoint, its keys) when
    the scheme matches, else one resolved from the environment and remembered in ``known``."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme == "file" or scheme == "local":
        return known.setdefault("", resolve("/", option="--input")), uri.split("://", 1)[1]
    loc = known.get(scheme)
    if loc is None:
        loc = known[scheme] = resolve(uri, option="--input-list")
    return loc, uri.split("://", 1)[1] if scheme else uri
