"""Reading and decoding: every file gives one row in order; bad files give errors, not crashes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
from PIL import Image, ImageFile, ImageOps

from inference import decode
from inference.decode import decode_image, load_uris
from inference.jpeg_header import read_header

ROOT = Path(__file__).resolve().parents[2]


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


# --- JPEGs decoded by torchvision.io.decode_jpeg: Pillow's pixels, Pillow's errors -----------------------

def photo(height: int = 37, width: int = 53, seed: int = 0) -> np.ndarray:
    """Gradients and noise (odd sizes: the last, partial blocks and chroma samples count too)."""
    y, x = np.mgrid[0:height, 0:width]
    smooth = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], axis=-1)
    noise = np.random.default_rng(seed).integers(-24, 25, smooth.shape)
    return (smooth + noise).clip(0, 255).astype(np.uint8)


def jpeg(array: np.ndarray, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", **options)
    return buf.getvalue()


def outcome(decoder, data: bytes) -> tuple:
    """The pixels a decoder gives, or the error a row would report."""
    try:
        array = decoder(data)
    except Exception as exc:  # noqa: BLE001
        return "error", decode._describe(exc)
    return "image", array.shape, array.tobytes()


def segment_at(data: bytes, marker: int) -> int:
    """Where the header's first segment with ``marker`` starts (its 0xFF)."""
    pos = 2
    while data[pos + 1] != marker:
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return pos


def with_segment(data: bytes, marker: int, body: bytes) -> bytes:
    """``data`` with one more segment right after SOI."""
    return data[:2] + bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body + data[2:]


def patched(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new):]


@pytest.fixture
def torchvision_calls(monkeypatch) -> list[tuple]:
    """Each call of ``torchvision.io.decode_jpeg`` (the decoder is looked up at each image)."""
    import torchvision.io

    calls, real = [], torchvision.io.decode_jpeg

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", counted)
    return calls


@pytest.mark.parametrize("options", [
    {"subsampling": 2}, {"subsampling": 1}, {"subsampling": 0}, {"progressive": True},
    {"quality": 100, "subsampling": 0}, {"restart_marker_blocks": 3}, {"keep_rgb": True},
    {"gray": True}, {"gray": True, "progressive": True},
], ids=["4:2:0", "4:2:2", "4:4:4", "progressive", "q100", "restart-markers", "RGB-colour-space", "gray",
        "gray-progressive"])
def test_plain_jpegs_decode_in_torchvision_to_pillows_pixels(torchvision_calls, options: dict):
    image = photo()
    if options.pop("gray", False):
        image = image[..., 1]
    data = jpeg(image, **options)
    out = decode_image(data)
    assert len(torchvision_calls) == 1
    expected = decode.decode_with_pillow(data)
    assert out.dtype == np.uint8 and out.shape == expected.shape == (37, 53, 3)
    assert np.array_equal(out, expected)
    assert out.flags.c_contiguous and not out.flags.writeable


@pytest.mark.parametrize("where", ["exif", "xmp"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_fast_path_turns_jpegs_upright_as_pillow_does(torchvision_calls, orientation: int, where: str):
    """Orientation read as Pillow's getexif() reads it: from EXIF, else from XMP's tiff:Orientation
    (which torchvision's own apply_exif_orientation does not read)."""
    if where == "exif":
        exif = Image.Exif()
        exif[0x0112] = orientation
        data = jpeg(photo(seed=orientation), exif=exif)
    else:
        data = jpeg(photo(seed=orientation), xmp=f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description '
                                                 f'tiff:Orientation="{orientation}"/></x:xmpmeta>'.encode())
    out = decode_image(data)
    assert len(torchvision_calls) == 1
    expected = decode.decode_with_pillow(data)
    assert out.shape == expected.shape == ((53, 37, 3) if orientation >= 5 else (37, 53, 3))
    assert np.array_equal(out, expected)
    assert out.flags.c_contiguous and not out.flags.writeable


def test_a_truncated_jpeg_fails_as_before(torchvision_calls):
    data = jpeg(photo())
    for cut in (len(data) - 2, len(data) // 2, 200):
        before = outcome(decode.decode_with_pillow, data[:cut])
        assert before[0] == "error" and "runcated" in before[1], before
        assert outcome(decode_image, data[:cut]) == before
    assert torchvision_calls == []  # no EOI at the end: Pillow's


def test_a_damaged_jpeg_that_ends_with_eoi_gives_pillows_pixels(torchvision_calls):
    data = jpeg(photo(120, 160))
    cut = data[:len(data) // 2] + b"\xff\xd9"  # its scan cut short: libjpeg fills the rest in gray
    flipped = patched(data, len(data) - 40, b"\x55")
    for damaged in (cut, flipped):
        assert outcome(decode_image, damaged) == outcome(decode.decode_with_pillow, damaged)
    assert len(torchvision_calls) == 2


def test_a_jpeg_over_max_pixels_is_refused_before_decoding(monkeypatch, torchvision_calls):
    def no_decoding(self):
        raise AssertionError("decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    data = jpeg(np.zeros((100, 100, 3), dtype=np.uint8))
    huge = patched(data, segment_at(data, 0xC0) + 5, (15000).to_bytes(2, "big") * 2)  # on a 100x100 scan
    with pytest.raises(ValueError, match=r"image too large: 15000x15000 pixels \(more than 178956970;"):
        decode_image(huge)
    monkeypatch.setattr(decode, "MAX_PIXELS", 100 * 100 - 1)
    with pytest.raises(ValueError, match=r"image too large: 100x100 pixels \(more than 9999;"):
        decode_image(data)
    assert torchvision_calls == []


def test_cmyk_png_and_other_formats_stay_with_pillow(torchvision_calls):
    image = photo()
    for data in (encode(image, "JPEG", "CMYK"), encode(image, "PNG"), encode(image, "WEBP"),
                 encode(image, "GIF")):
        out = decode_image(data)
        assert out.shape == (37, 53, 3) and np.array_equal(out, decode.decode_with_pillow(data))
    assert torchvision_calls == []


def test_without_torchvision_or_when_it_fails_pillow_decodes(monkeypatch, torchvision_calls):
    data = jpeg(photo())
    expected = decode.decode_with_pillow(data)

    def fails(*args, **kwargs):
        torchvision_calls.append(args)
        raise RuntimeError("decode_jpeg failed")

    import torchvision.io

    monkeypatch.setattr(torchvision.io, "decode_jpeg", fails)
    assert np.array_equal(decode_image(data), expected) and len(torchvision_calls) == 1
    decode._torchvision.cache_clear()
    try:
        monkeypatch.setitem(sys.modules, "torchvision", None)  # `import torchvision` raises ImportError
        assert decode._torchvision() is None
        assert np.array_equal(decode_image(data), expected) and len(torchvision_calls) == 1
    finally:
        decode._torchvision.cache_clear()


IMPORTS_TORCH_WHEN = """
import io, sys
import numpy as np
from PIL import Image
from inference.decode import decode_image

def loaded(fmt):
    if fmt:
        buf = io.BytesIO()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, fmt)
        decode_image(buf.getvalue())
    print(sorted({"torch", "torchvision"} & set(sys.modules)))

loaded(None); loaded("PNG"); loaded("JPEG")
"""


def test_torchvision_is_imported_at_the_first_jpeg_only():
    out = subprocess.run([sys.executable, "-c", IMPORTS_TORCH_WHEN], capture_output=True, text=True,
                         check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.splitlines() == ["[]", "[]", "['torch', 'torchvision']"], out.stdout


PLAIN = jpeg(photo())
SOF = segment_at(PLAIN, 0xC0)


@pytest.mark.parametrize("data", [
    patched(PLAIN, SOF + 1, b"\xc9"),  # arithmetic coding
    patched(PLAIN, SOF + 1, b"\xc3"),  # lossless
    patched(PLAIN, SOF + 4, b"\x0c"),  # 12-bit samples
    patched(PLAIN, SOF + 5, b"\x00\x00"),  # no height (a DNL marker would give it)
    patched(PLAIN, SOF + 9, b"\x02"),  # 2 components
    patched(PLAIN, SOF + 2, b"\x00\x0a"),  # a frame segment shorter than its components
    patched(PLAIN, 4, b"\xff\xff"),  # a segment longer than the file
    patched(PLAIN, 4, b"\x00\x01"),  # a length under 2
    PLAIN[:2] + b"\xff\xff" + PLAIN[2:],  # a fill byte
    PLAIN[:SOF] + PLAIN[SOF + 2 + int.from_bytes(PLAIN[SOF + 2:SOF + 4], "big"):],  # no frame
    PLAIN + b"\x00",  # bytes after EOI
    PLAIN[:-1],  # no EOI
    with_segment(with_segment(PLAIN, 0xE1, b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00"), 0xE1,
                 b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00"),  # two EXIF segments (Pillow joins them)
    with_segment(PLAIN, 0xE2, b"MPF\x00MM\x00*\x00\x00\x00\x08\x00\x00"),  # a multi-picture file
    with_segment(PLAIN, 0xE0, b"JFIF\x00\x01"),  # too short for Pillow's reader
    with_segment(PLAIN, 0xE2, b"ICC_PROFILE\x00\x01"),  # too short for Pillow's reader
    with_segment(PLAIN, 0xCC, b"\x00\x10"),  # arithmetic conditioning
], ids=["arithmetic", "lossless", "12-bit", "no-height", "2-components", "short-frame", "long-segment",
        "length-1", "fill-byte", "no-frame", "after-eoi", "no-eoi", "two-exif", "mpf", "short-jfif",
        "short-icc", "dac"])
def test_unusual_jpegs_are_left_to_pillow(torchvision_calls, data: bytes):
    assert read_header(data) is None
    assert outcome(decode_image, data) == outcome(decode.decode_with_pillow, data)
    assert torchvision_calls == []


def test_unreadable_exif_is_left_to_pillow(torchvision_calls):
    data = with_segment(PLAIN, 0xE1, b"Exif\x00\x00XX\x00*\x00\x00\x00\x08")  # not a TIFF header
    assert read_header(data) is not None
    assert outcome(decode_image, data) == outcome(decode.decode_with_pillow, data)
    assert torchvision_calls == []


@pytest.mark.filterwarnings("ignore")  # Pillow's on damaged EXIF, alike on both paths
def test_header_damage_gives_what_pillow_gives():
    """Bytes changed, dropped or added in the header (and now and then in the scan): the same pixels,
    or the same error, as Pillow alone; many of these still take the fast path."""
    rng = np.random.default_rng(7)
    exif = Image.Exif()
    exif[0x0112] = 6
    bases = [PLAIN, jpeg(photo(), exif=exif), jpeg(photo(), progressive=True), jpeg(photo()[..., 0]),
             jpeg(photo(), icc_profile=b"p" * 100, subsampling=0)]
    fast = 0
    for _ in range(400):
        data = bytearray(bases[rng.integers(len(bases))])
        scan = data.find(b"\xff\xda") + 2
        for _ in range(rng.integers(1, 4)):
            at = int(rng.integers(0, scan + 20) if rng.random() < 0.8 else rng.integers(0, len(data)))
            change = rng.random()
            if change < 0.6:
                data[at] = rng.integers(256)
            elif change < 0.8:
                del data[at]
            else:
                data.insert(at, rng.integers(256))
        fast += read_header(bytes(data)) is not None
        assert outcome(decode_image, bytes(data)) == outcome(decode.decode_with_pillow, bytes(data))
    assert fast > 50
