"""A real MinIO server (S3 API) on 127.0.0.1 (or another address of this machine) with a fresh bucket."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from .binaries import binary
from .procs import ManagedProcess, environment, free_port


class MinioS3:
    """The ``minio_s3`` fixture's object.

    Attributes:
        endpoint_url: ``http://HOST:PORT`` (``host`` is 127.0.0.1 unless given: Pods on the
            test node reach the host's own address, never its loopback).
        access_key / secret_key / region: credentials and region.
        bucket: a bucket created for this session (empty at start).
        env: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``,
            ``AWS_REGION`` (and ``AWS_DEFAULT_REGION``), ``AWS_EC2_METADATA_DISABLED``:
            the variables pyarrow / Ray / boto read.
        process: the :class:`~harness.procs.ManagedProcess` of ``minio``.
    """

    region = "us-east-1"

    def __init__(self, log_dir: Path, host: str = "127.0.0.1") -> None:
        self.log_dir = Path(log_dir)
        self.host = host
        self.access_key = "detectionjob-" + secrets.token_hex(4)
        self.secret_key = secrets.token_hex(20)
        self.bucket = "detectionjob-test-" + secrets.token_hex(4)
        self.process: ManagedProcess | None = None
        self._data_dir: Path | None = None
        self._port: int | None = None

    def start(self) -> MinioS3:
        """Start the server; again after :meth:`stop_server`: the same address and objects."""
        t0 = time.monotonic()
        fresh = self._data_dir is None
        port, console = self._port or free_port(), free_port()
        self._port = port
        self.endpoint_url = f"http://{self.host}:{port}"
        if fresh:
            self._data_dir = Path(tempfile.mkdtemp(prefix="detectionjob-minio-"))
        env = dict(os.environ)
        env.update(
            MINIO_ROOT_USER=self.access_key,
            MINIO_ROOT_PASSWORD=self.secret_key,
            MINIO_REGION=self.region,
            MINIO_BROWSER="off",
            MINIO_UPDATE="off",
            HOME=str(self._data_dir),  # keeps ~/.minio out of the real home
        )
        self.process = ManagedProcess(
            "minio",
            [
                binary("minio"),
                "server",
                str(self._data_dir / "data"),
                f"--address={self.host}:{port}",
                f"--console-address=127.0.0.1:{console}",
                "--quiet",
            ],
            self.log_dir / "minio.log",
            env=env,
        )

        def ready() -> bool:
            with urllib.request.urlopen(self.endpoint_url + "/minio/health/ready", timeout=2) as r:
                return r.status == 200

        self.process.wait_until(ready, 60, "MinIO /minio/health/ready")
        if fresh:  # a real bucket, created over the S3 API by pyarrow (CreateBucket)
            self.filesystem(allow_bucket_creation=True).create_dir(self.bucket)
        self.startup_seconds = time.monotonic() - t0
        return self

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    @contextlib.contextmanager
    def exported(self) -> Iterator[None]:
        """``AWS_*`` of this server in ``os.environ`` for the block (pyarrow, boto3 and Ray read
        them there); the previous values, or their absence, come back after it."""
        with environment(self.env):
            yield

    def filesystem(self, **kwargs):
        """A ``pyarrow.fs.S3FileSystem`` for this server (extra kwargs are passed on)."""
        from pyarrow import fs

        host = self.endpoint_url.removeprefix("http://")
        options = dict(
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            scheme="http",
            endpoint_override=host,
        )
        options.update(kwargs)
        return fs.S3FileSystem(**options)

    def uri(self, key: str = "") -> str:
        """``s3://<bucket>/<key>``."""
        return f"s3://{self.bucket}/{key.lstrip('/')}"

    def stop_server(self) -> None:
        """Stop the server process only (a store outage); :meth:`start` brings it back."""
        if self.process:
            self.process.stop()
            self.process = None

    def stop(self) -> None:
        if self.process:
            self.process.stop()
            self.process = None
        if self._data_dir:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None
