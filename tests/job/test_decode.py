"""Reading and decoding: every file gives one row in order; bad files give errors, not crashes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
from PIL import Image, ImageOps

from inference import decode
from inference.decode import decode_image, load_uris


def encode(array: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(buf, format=fmt)
    return buf.getvalue()


def test_any_mode_decodes_to_rgb_uint8():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    exact = decode_image(encode(rgb, "PNG"))
    assert exact.dtype == np.uint8 and exact.shape == (30, 40, 3) and (exact == rgb).all()
    for mode in ("L", "RGBA", "P", "CMYK"):
        fmt = "JPEG" if mode == "CMYK" else "PNG"
        out = decode_image(encode(rgb, fmt, mode))
        assert out.shape == (30, 40, 3) and out.dtype == np.uint8, mode


def test_oversized_images_are_refused_before_decoding(monkeypatch):
    data = encode(np.zeros((100, 100, 3), dtype=np.uint8), "PNG")
    monkeypatch.setattr(decode, "MAX_PIXELS", 100 * 100 - 1)
    with pytest.raises(ValueError, match="image too large: 100x100"):
        decode_image(data)
    monkeypatch.setattr(decode, "MAX_PIXELS", 100 * 100)
    assert decode_image(data).shape == (100, 100, 3)


def test_load_uris_keeps_order_and_turns_failures_into_rows(tmp_path: Path):
    rng = np.random.default_rng(1)
    paths, expected = [], []
    for i in range(20):  # more files than READ_THREADS, with failures in between
        p = tmp_path / f"f{i:02d}.png"
        if i % 5 == 3:
            p.write_bytes(b"not an image")
            expected.append(None)
        else:
            size = (10 + i, 20 + i, 3)
            p.write_bytes(encode(rng.integers(0, 256, size, dtype=np.uint8), "PNG"))
            expected.append(size)
        paths.append(str(p))
    paths.append(str(tmp_path / "missing.png"))
    expected.append(None)
    uris = [f"u{i}" for i in range(21)] + ["ftp://nowhere/x.jpg"]
    expected.append(None)

    def locate(uri: str):
        if uri.startswith("ftp:"):
            raise ValueError("unsupported scheme 'ftp'")
        return pafs.LocalFileSystem(), paths[int(uri[1:])]

    out = load_uris(uris, locate)
    assert list(out["path"]) == uris
    for i, size in enumerate(expected):
        if size is None:
            assert isinstance(out["error"][i], str) and out["error"][i], i
            assert out["image"][i].shape == (0, 0, 3) and out["width"][i] == out["height"][i] == 0
        else:
            assert out["error"][i] is None
            assert out["image"][i].shape == size
            assert (out["width"][i], out["height"][i]) == (size[1], size[0])
    assert "FileNotFoundError" in out["error"][20] or "No such file" in out["error"][20]
    assert out["error"][21] == "ValueError: unsupported scheme 'ftp'"  # an unusable URI is a row too


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_viewers_show_the_image(orientation: int):
    """A phone photo is stored sideways with an orientation tag: the detector sees (and the row
    reports) the image upright, as Pillow's own ImageOps.exif_transpose shows it."""
    rng = np.random.default_rng(orientation)
    stored = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)  # 40 wide, 30 high as stored
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, format="JPEG", exif=exif, quality=95)
    data = buf.getvalue()

    out = decode_image(data)
    with Image.open(io.BytesIO(data)) as img:
        upright = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    assert out.shape == upright.shape
    assert out.shape[:2] == ((40, 30) if orientation >= 5 else (30, 40))
    assert (out == upright).all()


def test_exif_orientation_sets_the_rows_width_and_height(tmp_path: Path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90° clockwise when shown
    Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(tmp_path / "phone.jpg", exif=exif)
    out = load_uris(["phone"], lambda _: (pafs.LocalFileSystem(), str(tmp_path / "phone.jpg")))
    assert (out["width"][0], out["height"][0]) == (30, 40)


@pytest.mark.parametrize("data, kind", [
    (b"not an image at all", "text"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3", "a PDF document"),
    (b"<!DOCTYPE html><html>", "text (HTML or XML?)"),
    (bytes(range(200, 232)), "an unknown format"),
])
def test_an_unreadable_file_is_described_without_python_internals(tmp_path: Path, data: bytes, kind: str):
    (tmp_path / "x.jpg").write_bytes(data)
    out = load_uris(["x"], lambda _: (pafs.LocalFileSystem(), str(tmp_path / "x.jpg")))
    error = out["error"][0]
    assert error.startswith("ValueError: not an image format Pillow can read: ")
    assert f"{len(data)} bytes of {kind}, starting {data[:16]!r}" in error
    assert "object at 0x" not in error and "BytesIO" not in error


def test_object_addresses_are_cut_from_any_error_text():
    exc = OSError("cannot read <_io.BufferedReader object at 0x7f3a2b1c0d90> here")
    assert decode._describe(exc) == "OSError: cannot read here"
