"""A real GCS emulator (fake-gcs-server, the JSON API over plain HTTP) on 127.0.0.1 with a fresh
bucket, and a loopback port standing in for a GCE metadata server that never answers."""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from .binaries import binary
from .procs import ManagedProcess, environment, free_port

NAME = "fake-gcs-server"


class SilentServer:
    """A loopback TCP server that accepts every connection and never answers (a metadata server
    that hangs). ``address`` is ``127.0.0.1:PORT``; :meth:`close` ends it and its connections."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self.accepted = 0
        self._closed = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="silent-server", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.connections.append(conn)
            self.accepted += 1

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for conn in self.connections:
            with contextlib.suppress(OSError):
                conn.close()
        self.thread.join(5)

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FakeGcs:
    """The ``gcs`` fixture's object.

    Attributes:
        endpoint_url: ``http://127.0.0.1:PORT``, the emulator's JSON API.
        bucket: a bucket created for this session (empty at start).
        env: ``CLOUD_STORAGE_EMULATOR_ENDPOINT`` (google-cloud-cpp, so pyarrow's GcsFileSystem, sends
            every request there, without credentials) and the metadata-server variables of
            google-cloud-cpp (``GCE_METADATA_ROOT``) and Google's other clients (``GCE_METADATA_HOST``,
            ``GCE_METADATA_IP``) pointed at a closed loopback port: nothing looks for a cloud
            metadata server beyond loopback.
        process: the :class:`~harness.procs.ManagedProcess` of ``fake-gcs-server``.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self.bucket = "detectionjob-test-" + secrets.token_hex(4)
        self.metadata_port = free_port()  # nothing listens there: connections are refused
        self.process: ManagedProcess | None = None

    def start(self) -> FakeGcs:
        t0 = time.monotonic()
        port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{port}"
        self.process = ManagedProcess(
            NAME,
            [
                binary(NAME),
                "-scheme", "http",
                "-host", "127.0.0.1",
                "-port", str(port),
                "-backend", "memory",  # gone with the process
                # Resumable uploads continue at the Location the server hands out: this server.
                "-external-url", self.endpoint_url,
                "-public-host", f"127.0.0.1:{port}",
                "-log-level", "warn",
            ],
            self.log_dir / "fake-gcs-server.log",
        )

        def ready() -> bool:
            with urllib.request.urlopen(self.endpoint_url + "/storage/v1/b", timeout=2) as r:
                return r.status == 200

        self.process.wait_until(ready, 60, "fake-gcs-server GET /storage/v1/b")
        self.create_bucket(self.bucket)
        self.startup_seconds = time.monotonic() - t0
        return self

    def create_bucket(self, name: str) -> None:
        """A bucket, created through the JSON API (``POST /storage/v1/b``)."""
        request = urllib.request.Request(
            f"{self.endpoint_url}/storage/v1/b?project=detectionjob-test",
            data=json.dumps({"name": name}).encode(), method="POST",
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.status == 200, r.status

    def buckets(self) -> list[str]:
        """Names of the emulator's buckets (``GET /storage/v1/b``)."""
        with urllib.request.urlopen(self.endpoint_url + "/storage/v1/b", timeout=10) as r:
            return [b["name"] for b in json.load(r).get("items", [])]

    @property
    def env(self) -> dict[str, str]:
        closed = f"127.0.0.1:{self.metadata_port}"
        return {
            "CLOUD_STORAGE_EMULATOR_ENDPOINT": self.endpoint_url,
            "GCE_METADATA_ROOT": closed,
            "GCE_METADATA_HOST": closed,
            "GCE_METADATA_IP": closed,
        }

    @contextlib.contextmanager
    def exported(self) -> Iterator[None]:
        """:attr:`env` in ``os.environ`` for the block (pyarrow and Ray's workers read it there);
        the previous values, or their absence, come back after it."""
        with environment(self.env):
            yield

    def filesystem(self):
        """A ``pyarrow.fs.GcsFileSystem`` for this emulator (no credentials, plain HTTP)."""
        from pyarrow import fs

        return fs.GcsFileSystem(anonymous=True, scheme="http",
                                endpoint_override=self.endpoint_url.removeprefix("http://"))

    def uri(self, key: str = "") -> str:
        """``gs://<bucket>/<key>``."""
        return f"gs://{self.bucket}/{key.lstrip('/')}"

    def stop(self) -> None:
        if self.process:
            self.process.stop()
            self.process = None
