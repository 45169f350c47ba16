"""Default credentials are looked up with a bound: a job without keys says so at once, naming the
store, the sources tried and how to pass keys, instead of waiting for ever on a metadata server."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from typing import TypeVar

import pyarrow.fs as pafs

from inference.reasons import PHRASES
from inference.uris import Location, UriError, truthy

T = TypeVar("T")

# How long looking up default credentials may take (GCS: google-cloud-cpp asks the GCE metadata
# server, which, where it accepts and never answers, holds every request for good; S3: the AWS
# chain), in seconds; DETECTIONJOB_CREDENTIALS_TIMEOUT overrides it.
CREDENTIALS_TIMEOUT = 30.0
_CREDENTIALS_FOUND: set[tuple[tuple[str, str], ...]] = set()  # set-ups proven in this process


def credentials_timeout() -> float:
    """The bound on a default-credential lookup: ``DETECTIONJOB_CREDENTIALS_TIMEOUT`` or 30 s."""
    raw = os.environ.get("DETECTIONJOB_CREDENTIALS_TIMEOUT", "").strip()
    if not raw:
        return CREDENTIALS_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError(f"DETECTIONJOB_CREDENTIALS_TIMEOUT: {raw!r} is not a number of seconds above 0")
    return value


def bounded(work: Callable[[], T], timeout: float) -> tuple[bool, T | None, Exception | None]:
    """``(finished, result, error)`` of ``work()`` run on a daemon thread for at most ``timeout`` s.

    A call still blocked then (inside a native client library, which Python cannot interrupt) is
    left behind on its thread; it does not keep the process from exiting."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["result"] = work()
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name="detectionjob-credentials", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return False, None, None
    return True, box.get("result"), box.get("error")  # type: ignore[return-value]


def _env_key(*prefixes: str) -> tuple[tuple[str, str], ...]:
    """The environment a credential lookup reads (``HOME`` and the variables named ``PREFIX*``)."""
    return tuple(sorted((k, v) for k, v in os.environ.items() if k == "HOME" or k.startswith(prefixes)))


def secret_hint(option: str) -> str:
    """Where the Kubernetes Secret for ``option``'s store is named in a DetectionJob."""
    return {"--input": "spec.input.secretRef", "--input-list": "spec.input.secretRef",
            "--output": "spec.output.secretRef",
            "--evaluate-annotations": "spec.evaluation.annotations.secretRef"}.get(option, "a secretRef")


def _gcloud_adc_file() -> str:
    """gcloud's application-default credentials file, where google-cloud-cpp looks for it."""
    override = os.environ.get("GOOGLE_GCLOUD_ADC_PATH_OVERRIDE")
    if override is not None:
        return override
    home = os.environ.get("HOME")
    return f"{home}/.config/gcloud/application_default_credentials.json" if home else ""


def gcs_metadata_server() -> str | None:
    """The GCE metadata server that google-cloud-cpp's default-credential lookup ends at
    (``GCE_METADATA_ROOT``, else ``metadata.google.internal.``), or None when the lookup stops
    before it: the emulator (``CLOUD_STORAGE_EMULATOR_ENDPOINT``: no credentials at all),
    ``GOOGLE_APPLICATION_CREDENTIALS`` or gcloud's application-default file."""
    if os.environ.get("CLOUD_STORAGE_EMULATOR_ENDPOINT") or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return None
    adc = _gcloud_adc_file()
    if adc and os.path.exists(adc):
        return None
    return os.environ.get("GCE_METADATA_ROOT") or "metadata.google.internal."


# google-cloud-cpp's words when it got no access token (and so sent no request).
_NO_GCS_TOKEN = re.compile(r"Could not create a OAuth2 access token.*?underlying error message was: "
                           r"(.*?)(?: error_info=|$)")


def gcs_credentials_message(uri: str, option: str, server: str, timeout: float, detail: str = "") -> str:
    """The one-line error of a GCS default-credential lookup that found nothing."""
    adc = _gcloud_adc_file() or "~/.config/gcloud/application_default_credentials.json"
    why = f" within {timeout:g} s" if not detail else ""
    return (f"{option}: {uri}{PHRASES['CredentialsNotFound']}{why} (tried GOOGLE_APPLICATION_CREDENTIALS: "
            f"unset, gcloud's application-default file {adc}: none, the GCE metadata server at {server}: "
            f"{detail or 'no answer'}); pass keys with {secret_hint(option)} on Kubernetes or "
            "GOOGLE_APPLICATION_CREDENTIALS here, or ?anonymous=true for a public bucket")


def check_gcs_credentials(fs: pafs.FileSystem, path: str, uri: str, option: str) -> None:
    """Raise :class:`UriError` (``CredentialsNotFound``) unless a GCS request gets an access token
    within :func:`credentials_timeout`.

    Only where the lookup ends at the metadata server (:func:`gcs_metadata_server`): one metadata
    request of the bucket, on a thread. Without credentials and off Google Cloud, google-cloud-cpp
    asks the metadata server before every request, retrying; where its address accepts and never
    answers, the request waits forever (nothing is printed, nothing written). Once found, a set-up
    is not asked again in this process."""
    server = gcs_metadata_server()
    key = _env_key("GOOGLE_", "GCE_", "CLOUD_STORAGE_")
    if server is None or key in _CREDENTIALS_FOUND:
        return
    timeout = credentials_timeout()
    finished, _, error = bounded(lambda: fs.get_file_info(path.split("/", 1)[0]), timeout)
    if not finished:
        raise UriError(gcs_credentials_message(uri, option, server, timeout))
    no_token = _NO_GCS_TOKEN.search(" ".join(str(error).split())) if error is not None else None
    if no_token:
        raise UriError(gcs_credentials_message(uri, option, server, timeout, no_token.group(1).strip()))
    _CREDENTIALS_FOUND.add(key)  # any other answer, even a refusal, came with a token


def _s3_sources() -> str:
    """The AWS default chain's sources, as the one-line error names them."""
    imds = ("(disabled by AWS_EC2_METADATA_DISABLED)" if truthy(os.environ.get("AWS_EC2_METADATA_DISABLED"))
            else "at " + (os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or "http://169.254.169.254"))
    return ("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, the shared config and credentials files, web "
            "identity (IRSA), the container credentials endpoint and the EC2 instance metadata service "
            + imds)


def s3_credentials_error(loc: Location, option: str) -> UriError | None:
    """``CredentialsNotFound`` when ``loc`` is S3 with neither keys nor ``?anonymous=true`` and the
    AWS default chain (botocore's, as the lister's client uses it) finds no credentials within
    :func:`credentials_timeout`; else None. For the pre-start checks' failures: without credentials
    pyarrow's S3 sends its requests unsigned and the store answers AccessDenied, which would not say
    why."""
    options = dict(loc.options)
    key = _env_key("AWS_")
    if loc.scheme != "s3" or options.get("anonymous") or options.get("access_key"):
        return None
    if key in _CREDENTIALS_FOUND:
        return None

    def lookup():
        import botocore.session

        return botocore.session.Session().get_credentials()

    timeout = credentials_timeout()
    finished, found, error = bounded(lookup, timeout)
    if finished and found is not None and error is None:
        _CREDENTIALS_FOUND.add(key)
        return None
    why = f" within {timeout:g} s" if not finished else ""
    detail = f"; {' '.join(str(error).split())}" if error is not None else ""
    return UriError(f"{option}: {loc.uri(loc.path)}{PHRASES['CredentialsNotFound']}{why} (tried "
                    f"{_s3_sources()}{detail}); pass keys with {secret_hint(option)} on Kubernetes or "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY here, or ?anonymous=true for a public "
                    "bucket")
