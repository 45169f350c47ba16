"""Read and decode images into uint8 HWC RGB arrays; a bad file becomes an error, not a crash."""

from __future__ import annotations

import io
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import pyarrow.fs as pafs
from PIL import Image, UnidentifiedImageError

from inference.store import check as check_store
from inference.store import is_network

EMPTY_IMAGE = np.zeros((0, 0, 3), dtype=np.uint8)
# Refuse decompression bombs (and say so in the row) instead of allocating gigabytes.
MAX_PIXELS = 178_956_970
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow itself refuses twice this at open()
# Files read and decoded at once per process: object-store GETs overlap, and Pillow releases the
# GIL while decoding, so a block's images decode on every core the task has.
READ_THREADS = 8
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
            7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
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
    sideways is stored with orientation 6 and comes out with its width and height swapped)."""
    if not data:
        raise ValueError("empty file (0 bytes)")
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
