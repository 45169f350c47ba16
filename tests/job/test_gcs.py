"""``gs://`` for real: a whole ``detectionjob run`` from and to the harness's GCS emulator
(fake-gcs-server), missing buckets as one line before Ray starts, and a default-credential lookup
that cannot hang the job (nor S3's chain). No request leaves loopback: every metadata server is a
loopback port (closed, or accepting and never answering)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from harness import SilentServer, free_port
from jobtest import FAST_MODEL, detectionjob, one_line_error, ray_started

from inference.credentials import CREDENTIALS_TIMEOUT, check_gcs_credentials, credentials_timeout
from inference.reasons import reason_of
from inference.uris import UriError

pytestmark = pytest.mark.cluster

RUN = ["run", "--model", FAST_MODEL, "--weights", "none", "--score-threshold", "0"]
BOUND = 5  # DETECTIONJOB_CREDENTIALS_TIMEOUT in the credential tests (the default is 30 s)
# Starting `python -m inference` (torch, pyarrow) on a loaded 2-core machine, on top of a bound.
STARTUP = 60


def objects(fs: pafs.FileSystem, path: str) -> list[str]:
    """Every object under ``path`` ('' when the bucket or prefix does not exist)."""
    selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    try:
        return sorted(f.path for f in fs.get_file_info(selector) if f.type == pafs.FileType.File)
    except OSError:  # no such bucket
        return []


def upload(gcs, sample_dir: Path, prefix: str, n: int) -> list[str]:
    """The first ``n`` sample images under ``gs://BUCKET/PREFIX/``; their URIs."""
    fs = gcs.filesystem()
    uris = []
    for p in sorted(sample_dir.glob("*.jpg"))[:n]:
        with fs.open_output_stream(f"{gcs.bucket}/{prefix}/{p.name}") as f:
            f.write(p.read_bytes())
        uris.append(gcs.uri(f"{prefix}/{p.name}"))
    return uris


def test_a_job_from_gs_to_gs(gcs, sample_dir, tmp_path, ray_tmpdir):
    fs = gcs.filesystem()
    uris = upload(gcs, sample_dir, "job/in", 3)
    t0 = time.monotonic()
    done = detectionjob([*RUN, "--input", gcs.uri("job/in"), "--output", gcs.uri("job/out"),
                         "--shard-size", "2", "--samples", "1"], ray_tmpdir, tmp_path)
    took = time.monotonic() - t0
    assert done.returncode == 0, done.stderr[-3000:]
    table = pq.read_table(f"{gcs.bucket}/job/out", filesystem=fs)
    paths = table.column("path").to_pylist()
    assert sorted(paths) == uris  # every image, once
    assert all(e is None for e in table.column("error").to_pylist())
    with fs.open_input_stream(f"{gcs.bucket}/job/out/_summary.json") as f:
        summary = json.loads(f.read())
    assert (summary["status"], summary["images"], summary["failed_images"]) == ("succeeded", 3, 0)
    assert json.loads(done.stdout)["images"] == 3
    assert summary["samples"] and summary["samples"][0].startswith(gcs.uri("job/out/_samples/"))
    assert fs.get_file_info(summary["samples"][0][len("gs://"):]).size > 0
    written = objects(fs, f"{gcs.bucket}/job/out")
    assert not any(".detectionjob-write-check-" in p for p in written)  # the probe was removed
    print(f"gs:// to gs:// job: {took:.1f} s")


def test_a_missing_input_bucket_is_one_line_and_nothing_is_written(gcs, tmp_path, ray_tmpdir):
    fs = gcs.filesystem()
    src = "gs://detectionjob-no-such-bucket/in"
    done = detectionjob([*RUN, "--input", src, "--output", gcs.uri("missing-in/out")], ray_tmpdir, tmp_path)
    assert done.returncode == 2
    line = one_line_error(done, "--input")
    assert line == (f"detectionjob run: error: --input: {src}: cannot be listed: bucket "
                    "'detectionjob-no-such-bucket' does not exist")
    assert reason_of(line) == "InputNotReadable"
    assert not ray_started(ray_tmpdir)
    assert objects(fs, f"{gcs.bucket}/missing-in") == []
    assert "detectionjob-no-such-bucket" not in gcs.buckets()


def test_a_missing_output_bucket_is_one_line_and_nothing_is_written(gcs, sample_dir, tmp_path,
                                                                   ray_tmpdir):
    uploaded = upload(gcs, sample_dir, "missing-out/in", 1)
    dst = "gs://detectionjob-no-such-bucket/out"
    done = detectionjob([*RUN, "--input", gcs.uri("missing-out/in"), "--output", dst], ray_tmpdir, tmp_path)
    assert done.returncode == 2
    line = one_line_error(done, "--output")
    assert line == (f"detectionjob run: error: --output: {dst}: not writable: NOT_FOUND: Permanent error, "
                    "with a last message of Not Found"), line
    assert reason_of(line) == "OutputNotWritable"
    assert not ray_started(ray_tmpdir)
    assert "detectionjob-no-such-bucket" not in gcs.buckets()  # not created either
    assert ["gs://" + p for p in objects(gcs.filesystem(), f"{gcs.bucket}/missing-out")] == uploaded


def no_credentials_env(monkeypatch, home: Path) -> None:
    """No credentials anywhere: no emulator, no key file, a home without gcloud's or AWS's files."""
    for name in ("CLOUD_STORAGE_EMULATOR_ENDPOINT", "GOOGLE_APPLICATION_CREDENTIALS",
                 "GOOGLE_GCLOUD_ADC_PATH_OVERRIDE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_EC2_METADATA_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "no-aws-credentials"))


@pytest.mark.parametrize("metadata", ["silent", "closed"])
def test_gcs_without_credentials_fails_within_the_bound(metadata, tmp_path, ray_tmpdir, monkeypatch):
    """Off Google Cloud and without credentials google-cloud-cpp asks the metadata server before
    every request; one that accepts and never answers held the job for good. Now: exit 2 within the
    bound, one line saying what was tried and how to pass keys."""
    no_credentials_env(monkeypatch, tmp_path / "home")
    monkeypatch.setenv("DETECTIONJOB_CREDENTIALS_TIMEOUT", str(BOUND))
    out = tmp_path / "out"
    with SilentServer() as silent:
        server = silent.address if metadata == "silent" else f"127.0.0.1:{free_port()}"
        for name in ("GCE_METADATA_ROOT", "GCE_METADATA_HOST", "GCE_METADATA_IP"):
            monkeypatch.setenv(name, server)
        t0 = time.monotonic()
        done = detectionjob([*RUN, "--input", "gs://imgs/in", "--output", str(out)], ray_tmpdir, tmp_path)
        took = time.monotonic() - t0
        asked = silent.accepted
    assert done.returncode == 2, done.stderr[-3000:]
    line = one_line_error(done, "--input")
    adc = tmp_path / "home/.config/gcloud/application_default_credentials.json"
    assert line == (
        f"detectionjob run: error: --input: gs://imgs/in: no credentials found within {BOUND} s (tried "
        f"GOOGLE_APPLICATION_CREDENTIALS: unset, gcloud's application-default file {adc}: none, the GCE "
        f"metadata server at {server}: no answer); pass keys with spec.input.secretRef on Kubernetes or "
        "GOOGLE_APPLICATION_CREDENTIALS here, or ?anonymous=true for a public bucket")
    assert reason_of(line) == "CredentialsNotFound"
    assert BOUND <= took < BOUND + STARTUP, took
    if metadata == "silent":
        assert asked >= 1  # the library really went to the (loopback) metadata server
    assert not out.exists() and not ray_started(ray_tmpdir)
    print(f"{metadata} metadata server: exit 2 after {took:.1f} s (bound {BOUND} s)")


class NoToken:
    """A GCS filesystem whose requests end as google-cloud-cpp's do, once its retries are spent,
    where the metadata server refuses connections (its words, as seen)."""

    def get_file_info(self, path: str):
        raise OSError(
            "google::cloud::Status(UNAVAILABLE: Retry policy exhausted, with a last message of Could not "
            "create a OAuth2 access token to authenticate the request. The request was not sent, as such an "
            "access token is required to complete the request successfully. The underlying error message "
            "was: PerformWork() - CURL error [7]=Could not connect to server error_info={reason=, domain=, "
            "metadata={gcloud-cpp.retry.function=GetBucketMetadata}})")


def test_a_lookup_that_ends_before_the_bound_is_the_same_one_line(tmp_path, monkeypatch):
    no_credentials_env(monkeypatch, tmp_path / "home")
    monkeypatch.setenv("GCE_METADATA_ROOT", "127.0.0.1:9")
    with pytest.raises(UriError) as raised:
        check_gcs_credentials(NoToken(), "imgs/out", "gs://imgs/out", "--output")
    adc = tmp_path / "home/.config/gcloud/application_default_credentials.json"
    assert str(raised.value) == (
        "--output: gs://imgs/out: no credentials found (tried GOOGLE_APPLICATION_CREDENTIALS: unset, "
        f"gcloud's application-default file {adc}: none, the GCE metadata server at 127.0.0.1:9: "
        "PerformWork() - CURL error [7]=Could not connect to server); pass keys with spec.output.secretRef "
        "on Kubernetes or GOOGLE_APPLICATION_CREDENTIALS here, or ?anonymous=true for a public bucket")
    # with the emulator, a key file or gcloud's file the lookup never reaches the metadata server
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "key.json"))
    check_gcs_credentials(NoToken(), "imgs/out", "gs://imgs/out", "--output")


def test_the_credential_bound_is_30_s_unless_set(monkeypatch):
    monkeypatch.delenv("DETECTIONJOB_CREDENTIALS_TIMEOUT", raising=False)
    assert credentials_timeout() == CREDENTIALS_TIMEOUT == 30
    monkeypatch.setenv("DETECTIONJOB_CREDENTIALS_TIMEOUT", "2.5")
    assert credentials_timeout() == 2.5
    monkeypatch.setenv("DETECTIONJOB_CREDENTIALS_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="DETECTIONJOB_CREDENTIALS_TIMEOUT: 'soon'"):
        credentials_timeout()


def test_s3_without_credentials_fails_fast_naming_the_chain(minio_s3, sample_dir, tmp_path, ray_tmpdir,
                                                             monkeypatch):
    """The AWS chain bounds its instance-metadata requests itself (about a second each): with the
    metadata service a loopback port that never answers, the job still ends at once, naming the
    sources it tried (the default 30 s bound is never reached)."""
    fs = minio_s3.filesystem()
    for p in sorted(sample_dir.glob("*.jpg"))[:1]:
        with fs.open_output_stream(f"{minio_s3.bucket}/nocreds/{p.name}") as f:
            f.write(p.read_bytes())
    src = minio_s3.uri("nocreds")
    no_credentials_env(monkeypatch, tmp_path / "home")
    monkeypatch.delenv("DETECTIONJOB_CREDENTIALS_TIMEOUT", raising=False)
    out = tmp_path / "out"
    with SilentServer() as silent:
        imds = f"http://{silent.address}"
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds)
        t0 = time.monotonic()
        done = detectionjob([*RUN, "--input", src, "--output", str(out)], ray_tmpdir, tmp_path)
        took = time.monotonic() - t0
        asked = silent.accepted
    assert done.returncode == 2, done.stderr[-3000:]
    line = one_line_error(done, "--input")
    assert line == (
        f"detectionjob run: error: --input: {src.rstrip('/')}: no credentials found (tried AWS_ACCESS_KEY_ID "
        "and AWS_SECRET_ACCESS_KEY, the shared config and credentials files, web identity (IRSA), the "
        f"container credentials endpoint and the EC2 instance metadata service at {imds}); pass keys with "
        "spec.input.secretRef on Kubernetes or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY here, or "
        "?anonymous=true for a public bucket")
    assert reason_of(line) == "CredentialsNotFound"
    assert asked >= 1 and took < CREDENTIALS_TIMEOUT + STARTUP, took
    assert not out.exists() and not ray_started(ray_tmpdir)
    print(f"S3 without credentials: exit 2 after {took:.1f} s")


def test_the_emulator_env_points_everything_at_loopback(gcs):
    env = gcs.env
    assert env["CLOUD_STORAGE_EMULATOR_ENDPOINT"] == gcs.endpoint_url
    assert gcs.endpoint_url.startswith("http://127.0.0.1:")
    for name in ("GCE_METADATA_ROOT", "GCE_METADATA_HOST", "GCE_METADATA_IP"):
        assert env[name].startswith("127.0.0.1:") and os.environ[name] == env[name]
