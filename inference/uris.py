"""Resolve input/output URIs (paths, ``local://``, ``s3://``, ``gs://``) to pyarrow filesystems."""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pyarrow.fs as pafs

from inference.options import DEFAULT_EXTENSIONS
from inference.store import ATTEMPTS, CONNECT_TIMEOUT, REQUEST_TIMEOUT


class UriError(ValueError):
    """A URI that cannot be used; the message names the option."""


@dataclass(frozen=True)
class Location:
    """A filesystem plus a path inside it, and how to print a path of it back as a URI."""

    fs: pafs.FileSystem
    path: str
    scheme: str  # "" for local files
    # S3 settings the filesystem was made with (endpoint, region, anonymous, credentials), as sorted
    # pairs: the paged lister (``inference.listing``) makes its boto3 client from the same ones.
    options: tuple[tuple[str, object], ...] = field(default=(), repr=False)

    def uri(self, path: str) -> str:
        """The user-facing URI of ``path`` (a path of this filesystem)."""
        return f"{self.scheme}://{path}" if self.scheme else path

    def join(self, *parts: str) -> str:
        return posixpath.join(self.path, *parts)


def truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _s3_options(query: dict[str, list[str]]) -> dict[str, object]:
    """S3 (or an S3-compatible store): credentials and endpoint from the standard AWS variables.

    Credentials found in the environment are passed explicitly, so the filesystem object that Ray
    ships to its workers carries them; without any, the AWS default chain (IRSA, instance profile)
    applies on every node. ``?anonymous=true`` reads public buckets.
    """
    q = {k: v[-1] for k, v in query.items()}
    kwargs: dict[str, object] = {}
    endpoint = (q.get("endpoint_override") or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL"))
    if endpoint:
        parts = urlsplit(endpoint)
        kwargs["endpoint_override"] = parts.netloc or parts.path
        kwargs["scheme"] = parts.scheme or "https"
    region = q.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    if truthy(q.get("anonymous")):
        kwargs["anonymous"] = True
    elif os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        kwargs["access_key"] = os.environ["AWS_ACCESS_KEY_ID"]
        kwargs["secret_key"] = os.environ["AWS_SECRET_ACCESS_KEY"]
        if os.environ.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    return kwargs


def _s3(options: dict[str, object]) -> pafs.S3FileSystem:
    kwargs = dict(options)
    if kwargs.get("endpoint_override") and kwargs.get("scheme") == "http":
        kwargs["allow_bucket_creation"] = True
    return pafs.S3FileSystem(**kwargs, connect_timeout=CONNECT_TIMEOUT, request_timeout=REQUEST_TIMEOUT,
                             retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=ATTEMPTS))


def _gcs(anonymous: bool) -> pafs.GcsFileSystem:
    """GCS with Google's default credentials, or none (``anonymous``). With
    ``CLOUD_STORAGE_EMULATOR_ENDPOINT`` (``http://HOST:PORT``) every request goes to that emulator,
    without credentials, as google-cloud-cpp's own default does there: pyarrow would still look them
    up. The endpoint is carried by the filesystem object, to Ray's workers too."""
    kwargs: dict[str, object] = {}
    emulator = os.environ.get("CLOUD_STORAGE_EMULATOR_ENDPOINT")
    if emulator:
        parts = urlsplit(emulator)
        anonymous = True
        kwargs.update(scheme=parts.scheme or "http", endpoint_override=parts.netloc or parts.path)
    return pafs.GcsFileSystem(anonymous=anonymous, **kwargs,
                              retry_time_limit=timedelta(seconds=ATTEMPTS * REQUEST_TIMEOUT))


def resolve(uri: str, option: str = "--input") -> Location:
    """Map a URI to a :class:`Location`; raise :class:`UriError` naming ``option`` if unusable.

    A ``gs://`` location read with default credentials is usable only once they are found, within
    :func:`credentials_timeout` (:func:`check_gcs_credentials`)."""
    if not uri or not uri.strip():
        raise UriError(f"{option}: empty URI")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("", "local", "file") or (len(scheme) == 1 and uri[1:3] in (":\\", ":/")):
        path = uri.split("://", 1)[1] if "://" in uri else uri
        return Location(pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path)), "")
    if not parts.netloc:
        raise UriError(f"{option}: {uri!r} has no bucket (expected {scheme}://BUCKET/PREFIX)")
    bucket_path = (parts.netloc + parts.path).rstrip("/")
    query = parse_qs(parts.query)
    if scheme in ("s3", "s3a"):
        options = _s3_options(query)
        return Location(_s3(options), bucket_path, "s3", tuple(sorted(options.items())))
    if scheme in ("gs", "gcs"):
        anonymous = truthy(query.get("anonymous", [""])[-1])
        loc = Location(_gcs(anonymous), bucket_path, "gs")
        if not anonymous:
            from inference.credentials import check_gcs_credentials  # it builds on this module

            check_gcs_credentials(loc.fs, loc.path, loc.uri(loc.path), option)
        return loc
    raise UriError(
        f"{option}: unsupported scheme {scheme!r} in {uri!r} (use a path, local://, s3:// or gs://)"
    )


def normalize_extensions(extensions: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """``["JPG", ".png"]`` -> ``("jpg", "png")``; empty or None means the defaults."""
    cleaned = tuple(sorted({e.strip().lower().lstrip(".") for e in extensions or () if e.strip()}))
    return cleaned or DEFAULT_EXTENSIONS


def list_images(loc: Location, extensions: tuple[str, ...], option: str = "--input") -> list[str]:
    """Files under ``loc`` (recursively) with a matching extension, sorted; or ``loc`` if a file."""
    info = loc.fs.get_file_info(loc.path)
    if info.type == pafs.FileType.File:
        return [loc.path]
    if info.type == pafs.FileType.NotFound and loc.scheme == "":
        raise UriError(f"{option}: {loc.path!r} does not exist")
    selector = pafs.FileSelector(loc.path, recursive=True, allow_not_found=loc.scheme != "")
    suffixes = tuple("." + e for e in extensions)
    files = [
        f.path
        for f in loc.fs.get_file_info(selector)
        if f.type == pafs.FileType.File and f.path.lower().endswith(suffixes)
    ]
    return sorted(files)
