"""URI resolution: local, local://, s3://, gs://; errors name the option; S3 settings kept, never
printed. (Listing moved to inference.listing: tests/job/test_listing.py.)"""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest

from inference.uris import DEFAULT_EXTENSIONS, UriError, normalize_extensions, resolve


def test_local_forms(tmp_path):
    for uri in (str(tmp_path), f"local://{tmp_path}", f"file://{tmp_path}"):
        loc = resolve(uri)
        assert isinstance(loc.fs, pafs.LocalFileSystem) and loc.path == str(tmp_path)
        assert loc.uri(loc.join("a.jpg")) == f"{tmp_path}/a.jpg"


def test_s3_credentials_and_endpoint_from_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    loc = resolve("s3://bucket/some/prefix/")
    assert isinstance(loc.fs, pafs.S3FileSystem)
    assert (loc.path, loc.scheme) == ("bucket/some/prefix", "s3")
    assert loc.fs.region == "eu-west-1"
    assert loc.uri("bucket/some/prefix/x.jpg") == "s3://bucket/some/prefix/x.jpg"


def test_s3_anonymous_query(monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    loc = resolve("s3://public-bucket/voc?anonymous=true&region=us-east-1")
    assert loc.path == "public-bucket/voc" and loc.fs.region == "us-east-1"


def test_gs():
    loc = resolve("gs://bucket/prefix?anonymous=true")
    assert isinstance(loc.fs, pafs.GcsFileSystem) and loc.path == "bucket/prefix"


@pytest.mark.parametrize(("uri", "message"), [
    ("", "empty"), ("s3://", "no bucket"), ("ftp://host/x", "unsupported scheme"),
])
def test_bad_uris_name_the_option(uri, message):
    with pytest.raises(UriError, match=f"--output: .*{message}"):
        resolve(uri, option="--output")


def test_normalize_extensions():
    assert normalize_extensions(["JPG", ".png", " .Tiff ", "", "jpg"]) == ("jpg", "png", "tiff")
    assert normalize_extensions(None) == normalize_extensions([]) == normalize_extensions(["  "]) \
        == DEFAULT_EXTENSIONS


def test_s3_options_are_kept_and_never_printed(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLEKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-t0ken")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    loc = resolve("s3://bucket/prefix")
    assert loc.options == (("access_key", "AKIDEXAMPLEKEY"), ("endpoint_override", "127.0.0.1:9000"),
                           ("region", "eu-west-1"), ("scheme", "http"), ("secret_key", "s3cr3t-value"),
                           ("session_token", "session-t0ken"))
    for text in (repr(loc), str(loc)):
        assert "s3cr3t" not in text and "AKIDEXAMPLEKEY" not in text and "t0ken" not in text
        assert "bucket/prefix" in text
    # the query wins over the environment; anonymous reads carry no keys
    anon = resolve("s3://public/voc?anonymous=true&region=us-west-2&endpoint_override=https://s3.example.com")
    assert dict(anon.options) == {"anonymous": True, "region": "us-west-2",
                                  "endpoint_override": "s3.example.com", "scheme": "https"}


def test_only_s3_has_options(tmp_path):
    assert resolve(str(tmp_path)).options == ()
    assert resolve("gs://bucket/prefix?anonymous=true").options == ()
