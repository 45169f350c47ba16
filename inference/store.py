"""A store that stops answering is waited for, not turned into error rows.

S3 and GCS clients get explicit connect and request timeouts with bounded retries (the
filesystems of :mod:`inference.uris`, the lister's boto3 client). When a read or write still fails
with a network error (no connection, nothing received within the request timeout, 503), the store
is asked whether it answers at all (a HEAD of the bucket): if it does, the fault is the object's
and the caller goes on as for any bad file (an error row); if not, :class:`StoreDown` is raised
and the work waits for the store, probing with backoff, for up to ``--store-wait`` seconds
(:func:`wait_until_up`). A store down for longer ends the job with :class:`StoreUnreachable`,
whose message names the store.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TypeVar

import pyarrow.fs as pafs

# Client settings (seconds, attempts): a connection is given up after CONNECT_TIMEOUT, a request
# that receives nothing for REQUEST_TIMEOUT (S3 answers in milliseconds; the AWS SDK's own default
# is 3 s); each request is tried ATTEMPTS times. A store that hangs is so found in about 30 s, and
# the probe of its bucket takes as long: together well inside the stall watchdog's 120 s.
CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 10.0
ATTEMPTS = 3
# Probing a store that does not answer: the first wait, and the longest.
FIRST_PAUSE, LONGEST_PAUSE = 1.0, 30.0

# What network failures look like in pyarrow's S3 (AWS SDK / curl), GCS and botocore messages.
_NETWORK = re.compile(
    r"NETWORK_CONNECTION|curlCode: (?:5|6|7|28|35|52|55|56)\b|Could not connect|Couldn't connect"
    r"|Timeout was reached|Connection (?:refused|reset)|Could not connect to the endpoint URL"
    r"|Read timeout|Connect timeout|SERVICE_UNAVAILABLE|SlowDown|HTTP response code: 50[234]"
    r"|UNAVAILABLE|DEADLINE_EXCEEDED")

T = TypeVar("T")


class StoreDown(OSError):
    """The store holding ``uri`` did not answer (it, not one object of it)."""

    def __init__(self, fs: pafs.FileSystem, path: str, detail: str) -> None:
        super().__init__(f"{store_uri(fs, path)} does not answer: {detail}")
        self.fs, self.path, self.detail = fs, path, detail


class StoreUnreachable(RuntimeError):
    """A store stayed down for longer than ``--store-wait``: the job fails, naming it."""


def store_uri(fs: pafs.FileSystem, path: str) -> str:
    """``s3://bucket`` / ``gs://bucket`` of ``path``."""
    scheme = {"s3": "s3", "gcs": "gs"}.get(fs.type_name, fs.type_name)
    return f"{scheme}://{path.split('/', 1)[0]}"


def is_network(exc: BaseException) -> bool:
    """Whether ``exc`` says the store could not be reached (rather than what it said)."""
    return isinstance(exc, (ConnectionError, TimeoutError)) or bool(_NETWORK.search(str(exc)))


def answers(fs: pafs.FileSystem, path: str) -> bool:
    """Whether the store holding ``path`` answers at all (HEAD of its bucket): any reply, even a
    refusal, is an answer."""
    try:
        fs.get_file_info(path.split("/", 1)[0])
    except Exception as exc:  # noqa: BLE001 - any reply but a network failure is an answer
        return not is_network(exc)
    return True


def check(exc: BaseException, fs: pafs.FileSystem, path: str) -> None:
    """Raise :class:`StoreDown` when ``exc`` (from reading or writing ``path``) came from a store
    that does not answer; return when the fault is the object's."""
    if isinstance(exc, StoreDown):
        raise exc
    if isinstance(fs, pafs.LocalFileSystem):
        return
    if is_network(exc) and not answers(fs, path):
        raise StoreDown(fs, path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc


def wait_until_up(down: StoreDown, since: float, wait: float,
                  on_wait: Callable[[], None] | None = None) -> None:
    """Probe the store of ``down`` with backoff until it answers; :class:`StoreUnreachable` once
    ``wait`` seconds have passed since ``since`` (``time.monotonic()``). ``on_wait`` runs before
    every pause (the detector tells the stall watchdog it is waiting, not stalled)."""
    pause = FIRST_PAUSE
    while not answers(down.fs, down.path):
        left = since + wait - time.monotonic()
        if left <= 0:
            raise StoreUnreachable(unreachable_message(down, wait))
        if on_wait is not None:
            on_wait()
        time.sleep(min(pause, left))
        pause = min(2 * pause, LONGEST_PAUSE)


def unreachable_message(down: StoreDown, wait: float) -> str:
    """The job's verdict; the operator finds the phrase of ``StoreUnreachable`` in it
    (:mod:`inference.reasons`)."""
    return (f"{store_uri(down.fs, down.path)}: did not answer for {wait:.0f} s (--store-wait); "
            f"last error: {down.detail}")


def patiently(work: Callable[[], T], wait: float, on_wait: Callable[[], None] | None = None) -> T:
    """``work()``; while it raises :class:`StoreDown`, wait for the store and run it again, for up
    to ``wait`` seconds from the first failure."""
    since = None
    while True:
        try:
            return work()
        except StoreDown as down:
            since = since if since is not None else time.monotonic()
            wait_until_up(down, since, wait, on_wait)
