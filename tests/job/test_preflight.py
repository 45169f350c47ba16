"""Fail fast and say why: no images is an error (unless --allow-empty), the job never lists its own
output or hidden folders, an output that cannot be written and an input that cannot be listed are
one line naming the option before Ray starts. Local folders and the harness's real MinIO."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pyarrow.fs as pafs
import pytest
from jobtest import FAST_MODEL, detectionjob, joining, one_line_error, ray_started

from inference.listing import Skip, list_images, skip_for
from inference.uris import normalize_extensions, resolve

RUN = ["run", "--model", FAST_MODEL, "--weights", "none", "--score-threshold", "0"]
EXT = normalize_extensions(None)


@pytest.mark.parametrize(("files", "seen"), [
    ((), "no files at all"),
    (("a.txt", "b/c.json", "notes.md"), "3 files, none with an image extension"),
    (("_samples/x.jpg", ".cache/y.png"), "no files at all"),  # hidden folders are not listed
])
def test_no_images_is_an_error_before_anything_starts(tmp_path, ray_tmpdir, files, seen):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text("x")
    done = detectionjob([*RUN, "--input", str(src), "--output", str(out)], ray_tmpdir, tmp_path)
    assert done.returncode == 2
    line = one_line_error(done, "--input")
    assert line == (f"detectionjob run: error: --input: no images under {src} matching "
                    f"{', '.join(EXT)} ({seen}; folders named _* or .* are not listed unless "
                    "--list-hidden). --allow-empty makes this a success")
    assert not out.exists() and not ray_started(ray_tmpdir)  # nothing written, Ray never started


def test_allow_empty_is_a_success_in_one_line(tmp_path, ray_tmpdir):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    done = detectionjob([*RUN, "--input", str(src), "--output", str(out), "--allow-empty"], ray_tmpdir,
                        tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"[detectionjob] nothing to do: no images under {src} (--allow-empty)\n"
    summary = json.loads((out / "_summary.json").read_text())
    assert (summary["status"], summary["reason"], summary["images"]) == ("succeeded", "NothingToDo", 0)
    assert json.loads(done.stdout) == summary
    assert not ray_started(ray_tmpdir)


def test_hidden_folders_and_the_output_are_never_listed(tmp_path):
    root = tmp_path / "in"
    for name in ("a.jpg", "sub/b.jpg", "_samples/c.png", ".git/d.png", "sub/.thumbs/e.jpg",
                 "results/part.png", "sub_x/f.jpg"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    src = resolve(str(root))
    got = list_images(src, EXT, skip=skip_for(src, resolve(str(root / "results")), hidden=False))
    assert got == [str(root / n) for n in ("a.jpg", "sub/b.jpg", "sub_x/f.jpg")]
    everything = list_images(src, EXT, skip=Skip(hidden=True))
    assert len(everything) == 7
    with_hidden = list_images(src, EXT, skip=skip_for(src, resolve(str(root / "results")), hidden=True))
    assert sorted(with_hidden) == sorted(set(everything) - {str(root / "results/part.png")})
    # a link to the output folder is the output too
    (root / "link").symlink_to(root / "results", target_is_directory=True)
    assert list_images(src, EXT, skip=skip_for(src, resolve(str(root / "results")), hidden=False)) == got


def test_output_inside_the_input_lists_the_same_images_every_run(cli_run, ray_runtime, tmp_path, ray_tmpdir):
    """The shared run wrote its output (parts, two sample PNGs) inside its input; run again there."""
    first = cli_run.done
    assert first.returncode == 0, first.stderr[-3000:]
    src = tmp_path / "in"
    shutil.copytree(cli_run.input, src)
    out = src / cli_run.output.relative_to(cli_run.input)
    assert len(list((out / "_samples").glob("*.png"))) == 2
    second = detectionjob([*RUN, "--input", str(src), "--output", str(out), "--samples", "2",
                           *joining(ray_runtime)], ray_tmpdir, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    runs = [json.loads(done.stdout) for done in (first, second)]
    assert runs[0]["listed_images"] == runs[1]["listed_images"] == 4
    assert sorted(pd.read_parquet(out).path) == sorted(str(p) for p in src.glob("*.jpg"))


def test_an_output_that_cannot_be_written_is_one_line_before_ray(sample_dir, tmp_path, ray_tmpdir):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    done = detectionjob([*RUN, "--input", str(sample_dir), "--output", str(afile / "out")], ray_tmpdir,
                        tmp_path)
    assert done.returncode == 2
    line = one_line_error(done, "--output")
    assert line.startswith(f"detectionjob run: error: --output: {afile / 'out'}: not writable: ")
    assert "Not a directory" in line or "not a directory" in line
    assert not ray_started(ray_tmpdir)
    assert afile.read_text() == "not a folder"


def test_a_missing_input_is_one_line(tmp_path, ray_tmpdir):
    done = detectionjob([*RUN, "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "out")],
                        ray_tmpdir, tmp_path)
    assert done.returncode == 2
    one_line_error(done, "--input")
    assert not (tmp_path / "out").exists()


def test_s3_a_missing_output_bucket_and_wrong_keys_are_one_line(minio_s3, sample_dir, tmp_path, ray_tmpdir,
                                                                 monkeypatch):
    fs = minio_s3.filesystem()
    for p in sorted(sample_dir.glob("*.jpg"))[:2]:
        with fs.open_output_stream(f"{minio_s3.bucket}/pre/{p.name}") as f:
            f.write(p.read_bytes())
    src = f"s3://{minio_s3.bucket}/pre"

    done = detectionjob([*RUN, "--input", src, "--output", "s3://no-such-bucket-dj/out"], ray_tmpdir,
                        tmp_path)
    assert done.returncode == 2
    line = one_line_error(done, "--output")
    assert line.startswith("detectionjob run: error: --output: s3://no-such-bucket-dj/out: not writable: ")
    assert "NO_SUCH_BUCKET" in line or "NoSuchBucket" in line, line
    assert fs.get_file_info("no-such-bucket-dj").type == pafs.FileType.NotFound  # not created either

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    done = detectionjob([*RUN, "--input", src, "--output", str(tmp_path / "out")], ray_tmpdir, tmp_path)
    assert done.returncode == 2
    line = one_line_error(done, "--input")
    assert line.startswith(f"detectionjob run: error: --input: {src}: cannot be listed: ")
    assert any(word in line for word in ("ACCESS_DENIED", "AccessDenied", "SignatureDoesNotMatch")), line
    assert not ray_started(ray_tmpdir)

    monkeypatch.undo()  # the right keys again
    empty = f"s3://{minio_s3.bucket}/typo-prefix"
    done = detectionjob([*RUN, "--input", empty, "--output", str(tmp_path / "out2")], ray_tmpdir, tmp_path)
    assert done.returncode == 2
    assert one_line_error(done, "--input").startswith(
        f"detectionjob run: error: --input: no images under {empty} matching ")


def test_s3_read_allowed_write_refused_is_one_line_before_ray(minio_s3, sample_dir, tmp_path, ray_tmpdir):
    """A principal that may read but not write (here anyone, by a bucket policy that grants
    GetObject and ListBucket only): the input lists, the output check's PUT is refused, nothing
    starts and nothing is left behind."""
    import boto3

    bucket = f"{minio_s3.bucket}-ro"
    s3 = boto3.client("s3", endpoint_url=minio_s3.endpoint_url, region_name=minio_s3.region,
                      aws_access_key_id=minio_s3.access_key, aws_secret_access_key=minio_s3.secret_key)
    s3.create_bucket(Bucket=bucket)
    images = sorted(sample_dir.glob("*.jpg"))[:2]
    try:
        for p in images:
            s3.put_object(Bucket=bucket, Key=f"in/{p.name}", Body=p.read_bytes())
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": ["s3:GetObject"],
             "Resource": [f"arn:aws:s3:::{bucket}/*"]},
            {"Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": ["s3:ListBucket"],
             "Resource": [f"arn:aws:s3:::{bucket}"]}]}))
        out = f"s3://{bucket}/out?anonymous=true"
        done = detectionjob([*RUN, "--input", f"s3://{bucket}/in?anonymous=true", "--output", out],
                            ray_tmpdir, tmp_path)
        assert done.returncode == 2, done.stderr[-2000:]
        line = one_line_error(done, "--output")
        assert line.startswith(f"detectionjob run: error: --output: s3://{bucket}/out: not writable: "), line
        assert "ACCESS_DENIED" in line or "AccessDenied" in line, line
        assert not ray_started(ray_tmpdir)
        left = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
        assert sorted(o["Key"] for o in left) == [f"in/{p.name}" for p in images]  # no marker left
    finally:
        for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=o["Key"])
        s3.delete_bucket(Bucket=bucket)
