"""URI resolution and listing: local, local://, s3://, gs://; errors name the option."""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest

from inference.uris import UriError, list_images, normalize_extensions, resolve


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


def test_missing_local_input_is_named(tmp_path):
    with pytest.raises(UriError, match="--input: .* does not exist"):
        list_images(resolve(str(tmp_path / "nope")), normalize_extensions(None))


def test_listing_is_recursive_filtered_and_sorted(tmp_path):
    for rel in ("b/2.JPG", "a/1.png", "a/deep/3.jpeg", "notes.txt", "c.jpg.bak"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    names = [p[len(str(tmp_path)) + 1:] for p in list_images(resolve(str(tmp_path)),
                                                                normalize_extensions(None))]
    assert names == ["a/1.png", "a/deep/3.jpeg", "b/2.JPG"]
    only_png = list_images(resolve(str(tmp_path)), normalize_extensions([".PNG"]))
    assert [p.rsplit("/", 1)[-1] for p in only_png] == ["1.png"]
    assert list_images(resolve(str(tmp_path / "a/1.png")), ("jpg",)) == [str(tmp_path / "a/1.png")]
