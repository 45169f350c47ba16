"""The streamed listing (inference.listing): planning units, listing each as a stream, manifests,
and where each image URI is read from. Local folders on disk; S3 against the harness's real MinIO."""

from __future__ import annotations

import inspect
import io
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from PIL import Image

from inference import listing
from inference.listing import (
    Unit,
    iter_manifest,
    iter_uris,
    list_images,
    manifest_format,
    plan_manifest,
    plan_units,
    s3_client,
    sources_for,
)
from inference.uris import DEFAULT_EXTENSIONS, UriError, normalize_extensions, resolve

EXT = normalize_extensions(None)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def touch(root, *rels: str, data: bytes = b"x") -> None:
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def images_by_os_walk(root, extensions=DEFAULT_EXTENSIONS) -> set[str]:
    """The expected answer, computed independently of the module."""
    suffixes = tuple("." + e for e in extensions)
    return {os.path.join(d, f) for d, _, files in os.walk(root) for f in files
            if f.lower().endswith(suffixes)}


# --- local folders ------------------------------------------------------------------------------

SMALL_TREE = (".hidden.png", "A.JPG", "c.jpg.bak", "jpg", "notes.txt", "z.jpg",
              "b/2.Png", "b/deep/3.jpeg", "b/deep/x.TIFF", "b/readme.md",
              "a/1.png", "a/0.bmp", "a/sub.jpg/inner.webp")


def test_local_listing_is_recursive_filtered_case_insensitively_and_ordered(tmp_path):
    touch(tmp_path, *SMALL_TREE)
    (tmp_path / "empty").mkdir()
    got = list_images(resolve(str(tmp_path)), EXT)
    # the root's files first, then each top-level folder, each folder's entries sorted by name
    assert [p[len(str(tmp_path)) + 1:] for p in got] == [
        ".hidden.png", "A.JPG", "z.jpg",
        "a/0.bmp", "a/1.png", "a/sub.jpg/inner.webp",  # a folder named like an image is walked
        "b/2.Png", "b/deep/3.jpeg", "b/deep/x.TIFF",
    ]
    assert set(got) == images_by_os_walk(tmp_path)
    only = list_images(resolve(str(tmp_path)), normalize_extensions([".PNG", "Tiff"]))
    assert [p[len(str(tmp_path)) + 1:] for p in only] == [
        ".hidden.png", "a/1.png", "b/2.Png", "b/deep/x.TIFF"]


def test_local_order_does_not_depend_on_creation_order(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    touch(one, *SMALL_TREE)
    touch(two, *reversed(SMALL_TREE))
    rel = [[p[len(str(root)) + 1:] for p in list_images(resolve(str(root)), EXT)] for root in (one, two)]
    assert rel[0] == rel[1] and len(rel[0]) == 9
    assert list_images(resolve(str(one)), EXT) == list_images(resolve(f"local://{one}"), EXT)


def test_local_plan_is_the_top_files_plus_one_walk_per_top_level_folder(tmp_path):
    touch(tmp_path, "top.jpg", "b/x/1.jpg", "a/2.jpg", "c.jpg/3.jpg")
    (tmp_path / "empty").mkdir()
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    touch(outside, "4.jpg")
    (tmp_path / "linked").symlink_to(outside, target_is_directory=True)
    root = str(tmp_path)
    assert plan_units(resolve(root)) == [
        Unit("top", root), *(Unit("walk", f"{root}/{d}") for d in ("a", "b", "c.jpg", "empty", "linked"))]
    # the planner never descends: a unit per folder, however deep the folders are
    assert plan_units(resolve(f"{root}/b")) == [Unit("top", f"{root}/b"), Unit("walk", f"{root}/b/x")]
    assert plan_units(resolve(f"{root}/empty")) == [Unit("top", f"{root}/empty")]
    assert list(iter_uris(resolve(root), Unit("top", root), EXT)) == [f"{root}/top.jpg"]
    assert list(iter_uris(resolve(root), Unit("walk", f"{root}/linked"), EXT)) == [f"{root}/linked/4.jpg"]


def test_local_listing_matches_os_walk_on_a_random_tree(tmp_path):
    rng = random.Random(3)
    folders = [""]
    for _ in range(40):
        folders.append(os.path.join(rng.choice(folders), f"d{rng.randrange(1000):03d}"))
    names = set()
    for i in range(600):
        ext = rng.choice(["jpg", "JPG", "jpeg", "png", "PNG", "webp", "tif", "txt", "json", "jpgx", ""])
        names.add(os.path.join(rng.choice(folders), f"f{i:04d}.{ext}" if ext else f"f{i:04d}"))
    touch(tmp_path, *names)
    src = resolve(str(tmp_path))
    units = plan_units(src)
    per_unit = [list(iter_uris(src, u, EXT)) for u in units]
    flat = [u for part in per_unit for u in part]
    assert len(flat) == len(set(flat))  # units are disjoint, nothing twice
    assert set(flat) == images_by_os_walk(tmp_path) and len(flat) > 300
    assert list_images(src, EXT) == flat == list_images(src, EXT)  # deterministic
    top_level = sorted(e.name for e in os.scandir(tmp_path) if e.is_dir())
    assert [u.kind for u in units] == ["top"] + ["walk"] * len(top_level)


def test_a_single_file_is_one_file_unit(tmp_path):
    touch(tmp_path, "a/1.png", "a/notes.txt")
    for name in ("1.png", "notes.txt"):  # a file named on purpose is taken as it is
        path = str(tmp_path / "a" / name)
        assert plan_units(resolve(path)) == [Unit("file", path)]
        assert list_images(resolve(path), ("jpg",)) == [path]
        assert list_images(resolve(f"file://{path}"), EXT) == [path]


def test_a_missing_local_input_names_the_option(tmp_path):
    missing = resolve(str(tmp_path / "nope"))
    with pytest.raises(UriError, match=r"^--input: '.*/nope' does not exist"):
        plan_units(missing)
    with pytest.raises(UriError, match=r"^--input: .* does not exist"):
        list_images(missing, EXT)
    with pytest.raises(UriError, match=r"^--source: "):
        list_images(missing, EXT, option="--source")


def test_a_folder_removed_after_planning_lists_nothing(tmp_path):
    touch(tmp_path, "a/1.jpg", "b/2.jpg")
    src = resolve(str(tmp_path))
    units = plan_units(src)
    shutil.rmtree(tmp_path / "a")
    assert [u for unit in units for u in iter_uris(src, unit, EXT)] == [str(tmp_path / "b/2.jpg")]


def test_symlinked_folders_are_followed_and_a_link_loop_is_listed_once_as_itself(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    touch(root, "top.jpg", "a/x.jpg", "b/y.jpg")
    touch(outside, "o.jpg")
    (root / "a" / "up").symlink_to("..", target_is_directory=True)  # a loop: root/a/up/a/up/...
    (root / "b" / "toa").symlink_to("../a", target_is_directory=True)  # not a loop: a is elsewhere
    (root / "a" / "back").symlink_to(".", target_is_directory=True)
    (root / "ext").symlink_to(outside, target_is_directory=True)
    got = list_images(resolve(str(root)), EXT)
    # every image once, under its own path; each loop once, as the link itself (an error row later)
    assert got == [str(root / p) for p in ("top.jpg", "a/back", "a/up", "a/x.jpg", "b/toa/back",
                                           "b/toa/up", "b/toa/x.jpg", "b/y.jpg", "ext/o.jpg")]


def test_unlistable_entries_become_rows_that_say_why(tmp_path):
    """A link loop, a self-referencing link, a dangling link and a folder that cannot be read are
    each listed and read as one error row; nothing vanishes, no error names a Python object."""
    root = tmp_path / "root"
    image = io.BytesIO()
    Image.new("RGB", (8, 6)).save(image, format="JPEG")
    touch(root, "a/x.jpg", "locked/hidden.jpg", data=image.getvalue())
    (root / "a" / "up").symlink_to("..", target_is_directory=True)
    (root / "self.jpg").symlink_to("self.jpg")
    (root / "gone.jpg").symlink_to("missing.jpg")
    os.chmod(root / "locked", 0)
    if os.geteuid() == 0:  # root reads any folder: give the folder away, and drop root's override
        os.chown(root / "locked", 65534, 65534)
    tmp_path.chmod(0o755)
    script = ("import json, sys; import pyarrow.fs as fs; from inference.listing import list_images; "
              "from inference.decode import load_uris; from inference.uris import resolve, "
              "normalize_extensions; got = list_images(resolve(sys.argv[1]), normalize_extensions(None)); "
              "out = load_uris(got, lambda u: (fs.LocalFileSystem(), u)); "
              "print(json.dumps(dict(zip(got, [e for e in out['error']]))))")
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []
    done = subprocess.run([*drop, sys.executable, "-c", script, str(root)], capture_output=True, text=True,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    errors = json.loads(done.stdout)
    assert list(errors) == [str(root / p) for p in ("gone.jpg", "self.jpg", "a/up", "a/x.jpg", "locked")]
    assert errors[str(root / "a/x.jpg")] is None
    assert "No such file" in errors[str(root / "gone.jpg")]
    assert "Too many levels of symbolic links" in errors[str(root / "self.jpg")]
    assert errors[str(root / "a/up")] == (
        f"IsADirectoryError: a symlink loop: this folder is {root}, which contains it; not followed "
        f"again (its images are listed once, under {root})")
    assert errors[str(root / "locked")] == (
        "PermissionError: [Errno 13] a folder that cannot be listed: Permission denied")
    assert not any("object at 0x" in (e or "") for e in errors.values())


def test_local_listing_is_a_stream(tmp_path):
    """Deterministic evidence of streaming: after the first URI came out, a folder not yet read
    is read when the stream gets to it: files added there appear, a folder removed is skipped.
    (A folder already read, here the unit's own, is not read again: ``e`` is not seen.)"""
    touch(tmp_path, "d/a/1.jpg", "d/b/2.jpg", "d/c/3.jpg")
    d = str(tmp_path / "d")
    stream = iter_uris(resolve(str(tmp_path)), Unit("walk", d), EXT)
    assert inspect.isgenerator(stream)
    assert next(stream) == f"{d}/a/1.jpg"
    shutil.rmtree(f"{d}/b")
    touch(tmp_path, "d/c/4.jpg", "d/e/5.jpg")
    assert list(stream) == [f"{d}/c/3.jpg", f"{d}/c/4.jpg"]


def test_fs_unit_lists_through_the_pyarrow_filesystem(tmp_path):
    """The ``fs`` unit (gs://, any other pyarrow filesystem), here on the local filesystem."""
    touch(tmp_path, *SMALL_TREE)
    src = resolve(str(tmp_path))
    got = list(iter_uris(src, Unit("fs", str(tmp_path)), EXT))
    assert got == sorted(images_by_os_walk(tmp_path))
    assert list(iter_uris(src, Unit("fs", str(tmp_path / "nope")), EXT)) == []


def test_an_unknown_unit_kind_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="unknown listing unit 'nope'"):
        list(iter_uris(resolve(str(tmp_path)), Unit("nope", str(tmp_path)), EXT))


# --- manifests ------------------------------------------------------------------------------------

def read_manifest(path, column=None) -> tuple[list[Unit], list[str]]:
    loc = resolve(str(path), option="--input-list")
    units = plan_manifest(loc, column)
    assert len(units) == 1 and units[0].kind == "manifest" and units[0].path == loc.path
    uris = [u for unit in units for u in iter_uris(loc, unit, EXT)]
    assert uris == list(iter_manifest(loc, units[0].column))
    return units, uris


@pytest.mark.parametrize(("name", "fmt"), [
    ("list.txt", "text"), ("list", "text"), ("LIST.CSV", "csv"), ("a.parquet", "parquet"),
    ("a.jsonl", "jsonl"), ("output.manifest", "jsonl"), ("x.NDJSON", "jsonl"),
    ("s3://b/dir.csv/list.txt", "text"),
])
def test_manifest_format(name, fmt):
    assert manifest_format(name) == fmt


def test_text_manifest(tmp_path):
    (tmp_path / "lists").mkdir()
    path = tmp_path / "lists" / "images.txt"
    path.write_text("# images to process\n\n/abs/a.jpg\n   s3://bucket/k.jpg  \nrel/c.png\n"
                    "   # an indented comment\n./d.jpg\nsub/../e.jpg\n../up.jpg\nfile:///x/f.jpg\n")
    units, uris = read_manifest(path)
    lists = str(tmp_path / "lists")
    assert units[0].column is None
    assert uris == ["/abs/a.jpg", "s3://bucket/k.jpg", f"{lists}/rel/c.png", f"{lists}/d.jpg",
                    f"{lists}/e.jpg", f"{tmp_path}/up.jpg", "file:///x/f.jpg"]
    empty = tmp_path / "empty"
    empty.write_text("")
    assert read_manifest(empty)[1] == []


def test_csv_manifest_uri_column_and_named_column(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text('id,path,uri,label\n1,p/1.jpg,a.jpg,cat\n2,p/2.jpg,"s3://b/x,y.jpg",dog\n'
                    "3,p/3.jpg,,none\n4,p/4.jpg,  /abs/z.png  ,owl\n")
    units, uris = read_manifest(path)  # "uri" is preferred to "path"
    assert units[0].column == "uri"
    assert uris == [f"{tmp_path}/a.jpg", "s3://b/x,y.jpg", "/abs/z.png"]
    units, uris = read_manifest(path, column="path")
    assert units[0].column == "path" and uris == [f"{tmp_path}/p/{i}.jpg" for i in range(1, 5)]


def test_one_column_csv_with_any_header(tmp_path):
    path = tmp_path / "files.csv"
    path.write_text("my images\na.jpg\nsub/b.png\n\n")
    units, uris = read_manifest(path)
    assert units[0].column == "my images" and uris == [f"{tmp_path}/a.jpg", f"{tmp_path}/sub/b.png"]


@pytest.mark.parametrize("first", ["a.JPG", "s3://bucket/a.jpg"])
def test_one_column_csv_without_a_header_loses_no_line(tmp_path, first):
    path = tmp_path / "files.csv"
    path.write_text(f"{first}\nsub/b.png\n\n")
    units, uris = read_manifest(path)
    assert units[0].column is None
    assert uris == [first if "://" in first else f"{tmp_path}/{first}", f"{tmp_path}/sub/b.png"]


def test_manifests_written_with_a_byte_order_mark(tmp_path):
    """Excel and PowerShell write UTF-8 with a BOM: the header is still ``uri``, a line still a URI."""
    csv_path, txt_path = tmp_path / "excel.csv", tmp_path / "ps.txt"
    csv_path.write_bytes("uri,label\r\na.jpg,1\r\n".encode("utf-8-sig"))
    txt_path.write_bytes("s3://b/a.jpg\nb.jpg\n".encode("utf-8-sig"))
    units, uris = read_manifest(csv_path)
    assert units[0].column == "uri" and uris == [f"{tmp_path}/a.jpg"]
    assert read_manifest(txt_path)[1] == ["s3://b/a.jpg", f"{tmp_path}/b.jpg"]


def test_csv_without_a_usable_column_names_the_option_and_the_columns(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("id,label\n1,cat\n")
    loc = resolve(str(path), option="--input-list")
    with pytest.raises(UriError, match=r"^--input-list: .*list\.csv' has no column .*\(columns: id, label\)"):
        plan_manifest(loc, None)
    with pytest.raises(UriError, match=r"^--input-list: .* has no column 'file' \(columns: id, label\); "
                                       r"name it with --input-list-column"):
        plan_manifest(loc, "file")


def test_jsonl_and_sagemaker_manifests(tmp_path):
    sm = tmp_path / "output.manifest"
    sm.write_text(json.dumps({"source-ref": "s3://b/1.jpg", "label": 3}) + "\n\n"
                  + json.dumps({"source-ref": "rel/2.jpg", "label-metadata": {"x": 1}}) + "\n")
    assert read_manifest(sm)[1] == ["s3://b/1.jpg", f"{tmp_path}/rel/2.jpg"]
    jl = tmp_path / "list.jsonl"
    jl.write_text('{"uri": "a.jpg"}\n{"uri": "/abs/b.jpg", "path": "ignored.jpg"}\n')
    assert read_manifest(jl)[1] == [f"{tmp_path}/a.jpg", "/abs/b.jpg"]
    named = tmp_path / "named.ndjson"
    named.write_text('{"img": "x.jpg", "uri": "not-this.jpg"}\n')
    assert read_manifest(named, column="img")[1] == [f"{tmp_path}/x.jpg"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"uri": "a.jpg"}\n{"other": 1}\n')
    with pytest.raises(UriError, match=r"^--input-list: a JSON line has no 'source-ref' string: \{.other"):
        read_manifest(bad)


def test_parquet_manifest(tmp_path):
    n = 25_000  # more than one record batch
    uris = [f"s3://b/img/{i:05d}.jpg" if i % 3 else f"rel/{i:05d}.png" for i in range(n)]
    path = tmp_path / "list.parquet"
    pq.write_table(pa.table({"id": list(range(n)), "uri": uris, "key": [None if i % 2 else f"k{i}.jpg"
                                                                         for i in range(n)]}), path)
    units, got = read_manifest(path)
    assert units[0].column == "uri"
    assert got == [u if u.startswith("s3://") else f"{tmp_path}/{u}" for u in uris]
    _, keys = read_manifest(path, column="key")  # nulls are skipped
    assert keys == [f"{tmp_path}/k{i}.jpg" for i in range(0, n, 2)]
    one = tmp_path / "one.parquet"
    pq.write_table(pa.table({"whatever": ["a.jpg", "b.jpg"]}), one)
    assert read_manifest(one)[1] == [f"{tmp_path}/a.jpg", f"{tmp_path}/b.jpg"]
    none = tmp_path / "none.parquet"
    pq.write_table(pa.table({"id": [1], "label": ["cat"]}), none)
    with pytest.raises(UriError, match=r"^--input-list: .*none\.parquet' has no column .*\(columns: id, lab"):
        read_manifest(none)


def test_a_manifest_is_read_as_a_stream(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("".join(f"{i}.jpg\n" for i in range(100_000)))
    loc = resolve(str(path))
    stream = iter_uris(loc, plan_manifest(loc, None)[0], EXT)
    assert inspect.isgenerator(stream) and next(stream) == f"{tmp_path}/0.jpg"
    stream.close()


def test_a_missing_manifest_names_the_option(tmp_path):
    for target in (tmp_path / "nope.txt", tmp_path):  # nothing there, or a folder
        with pytest.raises(UriError, match=r"^--input-list: no file at '.*'"):
            plan_manifest(resolve(str(target), option="--input-list"), None)


# --- sources_for ----------------------------------------------------------------------------------

def test_sources_for_uses_the_inputs_location_for_its_scheme(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    s3_input = resolve("s3://bucket/voc")
    known = {"s3": s3_input}
    assert sources_for("s3://bucket/voc/a.jpg", known) == (s3_input, "bucket/voc/a.jpg")
    loc, path = sources_for("S3://other-bucket/b.jpg", known)
    assert loc is s3_input and path == "other-bucket/b.jpg"
    assert list(known) == ["s3"]


def test_sources_for_local_paths_and_file_uris(tmp_path):
    touch(tmp_path, "a.jpg", data=b"image bytes")
    local_input = resolve(str(tmp_path))
    known = {"": local_input}
    target = str(tmp_path / "a.jpg")
    for uri in (target, f"file://{target}", f"local://{target}"):
        loc, path = sources_for(uri, known)
        assert loc is local_input and path == target
        with loc.fs.open_input_file(path) as f:
            assert f.read() == b"image bytes"
    # without a local input: resolved once, then remembered
    known = {}
    loc, path = sources_for(f"file://{target}", known)
    assert isinstance(loc.fs, pafs.LocalFileSystem) and path == target and known == {"": loc}
    assert sources_for(target, known) == (loc, target)


def test_sources_for_another_scheme_is_resolved_once_and_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    local_input = resolve(str(tmp_path))
    known = {"": local_input}
    loc, path = sources_for("s3://bucket-one/a.jpg", known)
    assert loc.scheme == "s3" and isinstance(loc.fs, pafs.S3FileSystem) and path == "bucket-one/a.jpg"
    assert known == {"": local_input, "s3": loc}
    again, path = sources_for("s3://bucket-two/deep/b.jpg", known)
    assert again is loc and path == "bucket-two/deep/b.jpg"
    assert sources_for(str(tmp_path / "c.jpg"), known)[0] is local_input
    with pytest.raises(UriError, match=r"^--input-list: unsupported scheme 'ftp'"):
        sources_for("ftp://host/a.jpg", known)


def test_s3_client_is_made_with_the_locations_settings(monkeypatch):
    from botocore import UNSIGNED

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLEKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    loc = resolve("s3://bucket/prefix")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION"):
        monkeypatch.delenv(name)  # from here on only the Location's own settings are there
    client = s3_client(loc)
    assert client.meta.endpoint_url == "http://127.0.0.1:9" and client.meta.region_name == "eu-west-1"
    assert client.meta.config.signature_version != UNSIGNED
    anon = s3_client(resolve("s3://public/voc?anonymous=true&region=us-west-2"))
    assert anon.meta.config.signature_version is UNSIGNED and anon.meta.region_name == "us-west-2"
    assert anon.meta.endpoint_url == "https://s3.us-west-2.amazonaws.com"


# --- S3, against the real MinIO ---------------------------------------------------------------

FLAT = 2050  # > 2,000 keys in one folder: three ListObjectsV2 pages of 1,000


def boto_client(minio_s3):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=minio_s3.endpoint_url, aws_access_key_id=minio_s3.access_key,
                        aws_secret_access_key=minio_s3.secret_key, region_name=minio_s3.region,
                        config=Config(max_pool_connections=16))


def is_image(key: str) -> bool:
    return key.lower().endswith(tuple("." + e for e in DEFAULT_EXTENSIONS))


@pytest.fixture(scope="module")
def s3_tree(minio_s3):
    """A prefix with a 2,050-image flat folder (plus sub-folders and non-images), a few small
    folders, top-level files, and look-alike sibling prefixes that must never be listed."""
    p = f"listing-{secrets.token_hex(3)}"
    exts = ["jpg", "JPG", "png", "jpeg"]
    keys = [f"{p}/flat/{i:05d}.{exts[i % 4]}" for i in range(FLAT)]
    keys += [f"{p}/{k}" for k in (
        "flat/meta.json", "flat/notes.txt", "flat/sub/x.jpg", "flat/sub/deeper/y.png", "flat/sub2/z.jpeg",
        "a/1.jpg", "a/b/2.png", "a/readme.md", "c/3.webp", "top.jpg", "top.txt", "folder.jpg/inside.png")]
    keys += [f"{p}x/sibling.jpg", f"{p}-sibling/s.jpg"]

    client = boto_client(minio_s3)
    bodies = {f"{p}/a/1.jpg": b"image a/1", f"{p}/top.jpg": b"image top"}
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=minio_s3.bucket, Key=k, Body=bodies.get(k, b"")),
                      keys))
    uri = {k: f"s3://{minio_s3.bucket}/{k}" for k in keys}

    class Tree:
        prefix = p
        bucket = minio_s3.bucket
        s3 = client

        @staticmethod
        def images(under: str) -> list[str]:
            """The image URIs under ``p/under`` (sorted like S3 lists: by key)."""
            return [uri[k] for k in sorted(keys) if k.startswith(f"{p}/{under}") and is_image(k)]

    return Tree


@pytest.fixture
def list_requests(monkeypatch):
    """Counts the ListObjectsV2 requests the module's own (real) boto3 clients send to MinIO:
    ``s3_client`` is wrapped to register a botocore event hook on the client it makes, and
    nothing else changes."""
    calls: list[dict] = []
    made = listing.s3_client

    def counting_client(loc):
        client = made(loc)
        client.meta.events.register("before-parameter-build.s3.ListObjectsV2",
                                    lambda params, **_: calls.append(dict(params)))
        return client

    monkeypatch.setattr(listing, "s3_client", counting_client)
    return calls


@pytest.mark.cluster
def test_s3_plan_is_one_unit_per_folder_when_the_first_page_holds_them(s3_tree, list_requests):
    b, p = s3_tree.bucket, s3_tree.prefix
    units = plan_units(resolve(f"s3://{b}/{p}/"))
    assert units == [Unit("s3", f"{b}/{p}", delimited=True),
                     *(Unit("s3", f"{b}/{p}/{f}") for f in ("a", "c", "flat", "folder.jpg"))]
    assert len(list_requests) == 1  # one listing request, however big the folders are
    assert list_requests[0]["Prefix"] == f"{p}/" and list_requests[0]["Delimiter"] == "/"


@pytest.mark.cluster
def test_s3_union_of_the_units_is_exactly_the_image_keys(s3_tree):
    b, p = s3_tree.bucket, s3_tree.prefix
    src = resolve(f"s3://{b}/{p}")
    parts = {u.path + ("/" if u.delimited else ""): list(iter_uris(src, u, EXT))
             for u in plan_units(src)}
    assert parts[f"{b}/{p}/"] == [f"s3://{b}/{p}/top.jpg"]  # the delimited unit: top-level files only
    assert parts[f"{b}/{p}/a"] == [f"s3://{b}/{p}/a/1.jpg", f"s3://{b}/{p}/a/b/2.png"]
    assert parts[f"{b}/{p}/folder.jpg"] == [f"s3://{b}/{p}/folder.jpg/inside.png"]
    assert all(part == sorted(part) for part in parts.values())
    everything = [u for part in parts.values() for u in part]
    assert len(everything) == len(set(everything)) == FLAT + 8
    assert set(everything) == set(s3_tree.images(""))
    assert all(u.startswith(f"s3://{b}/{p}/") for u in everything)  # never p-sibling/ or px/
    png = list_images(resolve(f"s3://{b}/{p}/a"), normalize_extensions(["PNG"]))
    assert png == [f"s3://{b}/{p}/a/b/2.png"]


@pytest.mark.cluster
def test_s3_big_folder_is_paged_and_streamed(s3_tree, list_requests):
    """The flat folder needs three pages; the first URI comes after the first request, and a key
    added after that, sorting last, is still listed: the later pages are requested later."""
    b, p = s3_tree.bucket, s3_tree.prefix
    src = resolve(f"s3://{b}/{p}/flat")
    stream = iter_uris(src, Unit("s3", f"{b}/{p}/flat"), EXT)
    assert inspect.isgenerator(stream) and list_requests == []
    first = next(stream)
    assert first == s3_tree.images("flat/")[0] and len(list_requests) == 1
    late = f"{p}/flat/zzz-late.jpg"
    s3_tree.s3.put_object(Bucket=b, Key=late, Body=b"")
    try:
        rest = list(stream)
    finally:
        s3_tree.s3.delete_object(Bucket=b, Key=late)
    assert [first, *rest] == [*s3_tree.images("flat/"), f"s3://{b}/{late}"]
    assert len(list_requests) == 3
    assert [r.get("ContinuationToken") is None for r in list_requests] == [True, False, False]


@pytest.mark.cluster
def test_s3_prefix_with_over_1000_entries_is_one_unit(s3_tree, list_requests):
    b, p = s3_tree.bucket, s3_tree.prefix
    src = resolve(f"s3://{b}/{p}/flat")
    units = plan_units(src)
    assert units == [Unit("s3", f"{b}/{p}/flat")]  # not delimited: the whole prefix, sub-folders too
    assert len(list_requests) == 1
    got = list_images(src, EXT)
    assert got == s3_tree.images("flat/") and len(got) == len(set(got)) == FLAT + 3
    assert f"s3://{b}/{p}/flat/sub/deeper/y.png" in got


@pytest.mark.cluster
def test_s3_single_object_and_missing_prefix(s3_tree):
    b, p = s3_tree.bucket, s3_tree.prefix
    assert plan_units(resolve(f"s3://{b}/{p}/top.jpg")) == [Unit("file", f"{b}/{p}/top.jpg")]
    assert list_images(resolve(f"s3://{b}/{p}/top.jpg"), EXT) == [f"s3://{b}/{p}/top.jpg"]
    missing = resolve(f"s3://{b}/{p}/no-such-folder")
    assert plan_units(missing) == [Unit("s3", f"{b}/{p}/no-such-folder", delimited=True)]
    assert list_images(missing, EXT) == []


@pytest.mark.cluster
def test_s3_listing_uses_the_locations_settings_not_the_environment(s3_tree, minio_s3, monkeypatch):
    """As on a Ray worker: the Location carries endpoint and keys; the environment is not read."""
    b, p = s3_tree.bucket, s3_tree.prefix
    src = resolve(f"s3://{b}/{p}/a")
    assert minio_s3.secret_key not in repr(src) and minio_s3.access_key not in repr(src)
    client = s3_client(src)
    assert client.meta.endpoint_url == minio_s3.endpoint_url and client.meta.region_name == minio_s3.region
    for name in minio_s3.env:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "wrong")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    assert list_images(src, EXT) == s3_tree.images("a/")


@pytest.mark.cluster
def test_s3_manifest_with_s3_entries(s3_tree, minio_s3):
    b, p = s3_tree.bucket, s3_tree.prefix
    fs = minio_s3.filesystem()
    text = (f"# made by hand\ns3://{b}/{p}/a/1.jpg\n../top.jpg\n./../a/b/2.png\n\n"
            f"s3://{b}/{p}/flat/00001.JPG\n")
    with fs.open_output_stream(f"{b}/{p}/lists/images.txt") as f:
        f.write(text.encode())
    expected = [f"s3://{b}/{p}/{k}" for k in ("a/1.jpg", "top.jpg", "a/b/2.png", "flat/00001.JPG")]
    sink = io.BytesIO()
    pq.write_table(pa.table({"key": [e.removeprefix(f"s3://{b}/{p}/") for e in expected]}), sink)
    with fs.open_output_stream(f"{b}/{p}/images.parquet") as f:
        f.write(sink.getvalue())

    for uri, column in ((f"s3://{b}/{p}/lists/images.txt", None), (f"s3://{b}/{p}/images.parquet", "key")):
        loc = resolve(uri, option="--input-list")
        units = plan_manifest(loc, None)
        assert units == [Unit("manifest", uri.removeprefix("s3://"), column=column)]
        got = [u for unit in units for u in iter_uris(loc, unit, EXT)]
        assert got == expected
        known = {"s3": loc}
        loc_a, path_a = sources_for(got[0], known)
        assert loc_a is loc and path_a == f"{b}/{p}/a/1.jpg"
        with loc_a.fs.open_input_file(path_a) as f:
            assert f.read() == b"image a/1"
        loc_t, path_t = sources_for(got[1], known)  # a relative entry: normalized, so it exists
        with loc_t.fs.open_input_file(path_t) as f:
            assert f.read() == b"image top"
    with pytest.raises(UriError, match=r"^--input-list: no file at 's3://.*/nope\.txt'"):
        plan_manifest(resolve(f"s3://{b}/{p}/lists/nope.txt", option="--input-list"), None)
