"""Checks before any work (before Ray starts and the model loads): the output can be written, the
input can be listed and holds an image. Each failure is a :class:`UriError` naming the option, the
URI and the store's own answer, e.g. ``--output: s3://results/x: AccessDenied: Access Denied``."""

from __future__ import annotations

import collections
import re
import uuid

import pyarrow.fs as pafs

from inference.credentials import s3_credentials_error
from inference.listing import Skip, Unit, iter_uris
from inference.reasons import PHRASES
from inference.uris import Location, UriError

# Files looked at for a first image before the job starts (about one page of S3 keys): past that,
# an input without images is found when its listing ends.
PROBE_FILES = 1000
# google-cloud-cpp's status in a pyarrow GCS error, without its error_info and errno details.
_GCS_STATUS = re.compile(r"google::cloud::Status\((\w+): (.*?)\s*(?:error_info=|\)\.? Detail:|\)$)")


class NoImages(UriError):
    """The input holds no file with an image extension."""


def store_answer(exc: BaseException) -> str:
    """What the store said, in one line: ``AccessDenied: ...`` from boto3, the ``AWS Error ...``
    part of a pyarrow S3 error, the status of a pyarrow GCS error (``NOT_FOUND: ...``), the OS's
    words for a local path."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and response.get("Error"):
        err = response["Error"]
        return f"{err.get('Code', type(exc).__name__)}: {err.get('Message') or 'no detail'}"
    text = " ".join(str(exc).split())
    aws = text.find("AWS Error")
    if aws >= 0:
        return text[aws:]
    gcs = _GCS_STATUS.search(text)
    if gcs:
        return f"{gcs.group(1)}: {gcs.group(2)}"
    strerror = getattr(exc, "strerror", None)
    if strerror and getattr(exc, "filename", None) is None:
        text = re.sub(r"^\[Errno \d+\]\s*", "", text)
    return text or type(exc).__name__


def check_output(dst: Location, option: str = "--output") -> None:
    """Create the output folder if needed and prove it writable: write a small marker and delete
    it (on an object store, one PUT and one DELETE)."""
    marker = dst.join(f".detectionjob-write-check-{uuid.uuid4().hex}")
    try:
        if dst.scheme == "":
            dst.fs.create_dir(dst.path, recursive=True)
        with dst.fs.open_output_stream(marker) as sink:
            sink.write(b"detectionjob write check\n")
    except Exception as exc:  # noqa: BLE001 - whatever the store says, the user gets it in one line
        raise s3_credentials_error(dst, option) or UriError(
            f"{option}: {dst.uri(dst.path)}{PHRASES['OutputNotWritable']}{store_answer(exc)}") from None
    try:
        dst.fs.delete_file(marker)
    except Exception as exc:  # noqa: BLE001
        raise UriError(f"{option}: {dst.uri(dst.path)}{PHRASES['OutputNotWritable']}a file could be "
                       f"written but not deleted ({dst.uri(marker)}): {store_answer(exc)}") from None


def listing_error(src: Location, option: str, exc: BaseException) -> UriError:
    """A failure to list ``src`` as the user's error, naming the option and the store's answer (or,
    for S3 without credentials, the sources the AWS chain tried)."""
    if isinstance(exc, UriError):
        return exc
    return s3_credentials_error(src, option) or UriError(
        f"{option}: {src.uri(src.path)}{PHRASES['InputNotReadable']}{store_answer(exc)}")


def first_image(src: Location, units: list[Unit], extensions: tuple[str, ...], skip: Skip,
                budget: int = PROBE_FILES) -> tuple[bool | None, int]:
    """Whether the input holds an image: ``(True, _)`` at the first one, ``(False, files seen)``
    when the whole listing had none, ``(None, _)`` when ``budget`` other files came first.
    :class:`FileNotFoundError` for a GCS bucket that does not exist (pyarrow lists it as empty)."""
    counts: collections.Counter = collections.Counter()
    for unit in units:
        for _ in iter_uris(src, unit, extensions, skip, counts):
            return True, counts["other_files"]
        if counts["other_files"] >= budget:
            return None, counts["other_files"]
    if not counts["other_files"] and missing_bucket(src):
        raise FileNotFoundError(f"bucket {src.path.split('/', 1)[0]!r} does not exist")
    return False, counts["other_files"]


def missing_bucket(src: Location) -> bool:
    """Whether ``src`` is on GCS, in a bucket that does not exist. (S3's lister says NoSuchBucket.)"""
    if src.scheme != "gs":
        return False
    try:
        return src.fs.get_file_info(src.path.split("/", 1)[0]).type == pafs.FileType.NotFound
    except Exception:  # noqa: BLE001 - e.g. no right to read the bucket's metadata: not known missing
        return False


def no_images(src: Location, extensions: tuple[str, ...], other_files: int,
              option: str = "--input") -> NoImages:
    seen = (f"{other_files} file{'s' if other_files != 1 else ''}, none with an image extension"
            if other_files else "no files at all")
    return NoImages(f"{option}{PHRASES['NoImages']}{src.uri(src.path)} matching {', '.join(extensions)} "
                    f"({seen}; folders named _* or .* are not listed unless --list-hidden). "
                    "--allow-empty makes this a success")
