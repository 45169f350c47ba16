"""Read and decode images into uint8 HWC RGB arrays; a bad file becomes an error, not a crash."""

from __future__ import annotations

import io
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from types import ModuleType

import numpy as np
import pyarrow.fs as pafs
from PIL import Image, UnidentifiedImageError

from inference.jpeg_header import JpegHeader, read_header
from inference.store import check as check_store
from inference.store import is_network

EMPTY_IMAGE = np.zeros((0, 0, 3), dtype=np.uint8)
# Refuse decompression bombs (and say so in the row) instead of allocating gigabytes.
MAX_PIXELS = 178_956_970
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow itself refuses twice this at open()
# Files read and decoded at once per process: object-store GETs overlap, and the decoders release
# the GIL while decoding, so a block's images decode on every core the task has.
READ_THREADS = 8
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
            7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
# The same turns on a decoded HWC array (views; one copy makes them contiguous).
_TURN_ARRAY = {Image.Transpose.FLIP_LEFT_RIGHT: lambda a: a[:, ::-1],
               Image.Transpose.ROTATE_180: lambda a: a[::-1, ::-1],
               Image.Transpose.FLIP_TOP_BOTTOM: lambda a: a[::-1],
               Image.Transpose.TRANSPOSE: lambda a: a.transpose(1, 0, 2),
               Image.Transpose.ROTATE_270: lambda a: np.rot90(a, -1),
               Image.Transpose.TRANSVERSE: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
               Image.Transpose.ROTATE_90: lambda a: np.rot90(a)}
# Pillow's getexif() takes the orientation from XMP where EXIF has none.
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(="|>)([0-9])')
# A Python object's repr in an exception's text (Pillow names the BytesIO it was given).
_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")
_SIGNATURES = ((b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"), (b"\x1f\x8b", "gzip data"),
               (b"<", "text (HTML or XML?)"), (b"\x00\x00\x00", "an unknown binary format"))


def _what(data: bytes) -> str:
    """What bytes that no image decoder recognises look like, for the error row."""
    head = data[:16]
    kind = next((name for magic, name in _SIGNATURES if head.startswith(magic)), None)
    if kind is None:
        kind = "text" if all(32 <= b < 127 or b in b"\t\r\n" for b in head) else "an unknown format"
    return f"{len(data)} bytes of {kind}, starting {head!r}"


def decode_image(data: bytes) -> np.ndarray:
    """Decode encoded image bytes to a contiguous, read-only ``uint8`` array of shape ``(H, W, 3)``,
    turned upright by the EXIF orientation tag (as viewers show the image: a phone photo taken
    sideways is stored with orientation 6 and comes out with its width and height swapped).

    A plain JPEG (:func:`inference.jpeg_header.read_header`) is decoded by torchvision, a torch op
    that holds the GIL far less than Pillow does (the detector's launching thread runs beside these
    threads), to the pixels Pillow gives; anything else, or anything torchvision fails on, by Pillow,
    whose errors are the ones a row reports."""
    if not data:
        raise ValueError("empty file (0 bytes)")
    array = decode_with_torchvision(data)
    return decode_with_pillow(data) if array is None else array


def decode_with_pillow(data: bytes) -> np.ndarray:
    """:func:`decode_image` by Pillow, for any image format and for every error message."""
    try:
        opened = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ValueError(f"not an image format Pillow can read: {_what(data)}") from None
    with opened as img:
        # Checked here, not through Pillow's warning: warning filters are not thread-safe.
        if img.width * img.height > MAX_PIXELS:
            raise ValueError(f"image too large: {img.width}x{img.height} pixels "
                             f"(more than {MAX_PIXELS}; a decompression bomb?)")
        img.load()  # forces the full decode: truncated files fail here
        rgb = img if img.mode == "RGB" else img.convert("RGB")
        turn = _UPRIGHT.get(img.getexif().get(EXIF_ORIENTATION, 1))
        if turn is not None:
            rgb = rgb.transpose(turn)
        array = np.asarray(rgb)  # one copy out of Pillow; convert() would add another
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"decoded to an empty image of shape {array.shape}")
    return array


def decode_with_torchvision(data: bytes) -> np.ndarray | None:
    """:func:`decode_image` by ``torchvision.io.decode_jpeg``; None where Pillow is to decode (and
    refuse) ``data``: not a plain JPEG, more than ``MAX_PIXELS``, EXIF that Pillow cannot read, no
    torchvision, or an error in its decoder."""
    header = read_header(data)
    if header is None or header.width * header.height > MAX_PIXELS:
        return None
    try:  # Pillow's reading, not decode_jpeg's apply_exif_orientation (first APP1 only, no XMP)
        turn = _UPRIGHT.get(_orientation(header))
    except Exception:  # noqa: BLE001 - EXIF that Pillow fails on: its path says how, as before
        return None
    modules = _torchvision()
    if modules is None:
        return None
    torch, tvio = modules
    try:  # bytearray: torch warns about a tensor over read-only bytes
        chw = tvio.decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                               mode=tvio.ImageReadMode.RGB)
    except RuntimeError:
        return None
    if tuple(chw.shape) != (3, header.height, header.width):
        return None
    array = chw.permute(1, 2, 0).numpy()  # HWC: the decoder's own layout, no copy
    array = np.ascontiguousarray(array if turn is None else _TURN_ARRAY[turn](array))
    array.flags.writeable = False
    return array


def _orientation(header: JpegHeader) -> object:
    """The EXIF orientation as Pillow's ``getexif()`` reads it from these segments (1 if none)."""
    exif = Image.Exif()
    if header.exif is not None:
        exif.load(header.exif)
    if EXIF_ORIENTATION not in exif and header.xmp and (found := _XMP_ORIENTATION.search(header.xmp)):
        return int(found[2])
    return exif.get(EXIF_ORIENTATION, 1)


@cache
def _torchvision() -> tuple[ModuleType, ModuleType] | None:
    """``(torch, torchvision.io)``, imported at the first JPEG; None if they cannot be."""
    try:
        import torch
        from torchvision import io as tvio
    except Exception:  # noqa: BLE001 - a missing or broken install: Pillow decodes instead
        return None
    # Deprecated since torchvision 0.29 (for TorchCodec): a release without them leaves it to Pillow.
    return (torch, tvio) if hasattr(tvio, "decode_jpeg") and hasattr(tvio, "ImageReadMode") else None


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    """The file's bytes. A local folder (the listing yields one it could not list or follow) raises
    an error that says why it gave no images (looked into only when the open fails)."""
    try:
        stream = fs.open_input_stream(path)
    except OSError:
        if isinstance(fs, pafs.LocalFileSystem) and os.path.isdir(path):
            raise _folder_error(path) from None
        raise
    with stream as f:
        return f.read()


def _folder_error(path: str) -> OSError:
    real = os.path.realpath(path)
    above, parent = path, os.path.dirname(path)
    while parent != above:
        if os.path.realpath(parent) == real:
            return IsADirectoryError(f"a symlink loop: this folder is {parent}, which contains it; not "
                                     f"followed again (its images are listed once, under {parent})")
        above, parent = parent, os.path.dirname(parent)
    try:
        with os.scandir(path):
            pass
    except OSError as exc:  # OSError(errno, text) is the errno's own subclass (PermissionError, ...)
        return OSError(exc.errno, f"a folder that cannot be listed: {exc.strerror or exc}")
    return IsADirectoryError("a folder, not an image file")


def _describe(exc: BaseException) -> str:
    """``Type: message`` without Python object addresses; a folder says why it is not an image."""
    text = _OBJECT_REPR.sub("", str(exc)).strip() or "no detail"
    return f"{type(exc).__name__}: {text}"


def load_one(fs: pafs.FileSystem, path: str) -> tuple[np.ndarray, str | None]:
    """``(image, None)``, or ``(EMPTY_IMAGE, error message)`` for a file that cannot be used;
    :class:`inference.store.StoreDown` when its store does not answer at all."""
    try:
        return decode_image(read_bytes(fs, path)), None
    except Exception as exc:  # noqa: BLE001 - every failure of the file becomes an error row
        check_store(exc, fs, path)
        if not is_network(exc):
            return EMPTY_IMAGE, _describe(exc)
    try:  # a network failure, yet the store answers: once more before the file is blamed
        return decode_image(read_bytes(fs, path)), None
    except Exception as exc:  # noqa: BLE001
        check_store(exc, fs, path)
        return EMPTY_IMAGE, _describe(exc)


def _threads() -> ThreadPoolExecutor:
    """The process's read threads, made once (``--streams`` calls ask from several threads)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="read-decode")
    return _pool


def _load_uri(locate: Callable[[str], tuple[pafs.FileSystem, str]], uri: str):
    try:
        fs, path = locate(uri)
    except Exception as exc:  # noqa: BLE001 - an unusable URI is an error row too
        return EMPTY_IMAGE, _describe(exc)
    return load_one(fs, path)


def load_uris(uris: list[str], locate: Callable[[str], tuple[pafs.FileSystem, str]]) -> dict[str, np.ndarray]:
    """Read and decode ``uris`` on the read threads: ``path (uri), image (uint8 HWC), width, height,
    error``, the detector's input; ``locate`` maps a URI to its filesystem and path."""
    return _columns(uris, list(_threads().map(partial(_load_uri, locate), uris)))


def _columns(uris, loaded: list[tuple[np.ndarray, str | None]]) -> dict[str, np.ndarray]:
    column = np.empty(len(loaded), dtype=object)
    column[:] = [image for image, _ in loaded]
    return {
        "path": np.asarray(uris, dtype=object),
        "image": column,
        "width": np.asarray([image.shape[1] for image, _ in loaded], dtype=np.int32),
        "height": np.asarray([image.shape[0] for image, _ in loaded], dtype=np.int32),
        "error": np.asarray([error for _, error in loaded], dtype=object),
    }
