"""Read and decode images into uint8 HWC RGB arrays; a bad file becomes an error, not a crash."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pyarrow.fs as pafs
from PIL import Image

EMPTY_IMAGE = np.zeros((0, 0, 3), dtype=np.uint8)
# Refuse decompression bombs (and say so in the row) instead of allocating gigabytes.
Image.MAX_IMAGE_PIXELS = 178_956_970


def decode_image(data: bytes) -> np.ndarray:
    """Decode encoded image bytes to a contiguous, read-only ``uint8`` array of shape ``(H, W, 3)``."""
    if not data:
        raise ValueError("empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # forces the full decode: truncated files fail here
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            array = np.asarray(rgb)  # one copy out of Pillow; convert() would add another
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"decoded to an empty image of shape {array.shape}")
    return array


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or "no detail"
    return f"{type(exc).__name__}: {text}"


def load_images(batch: dict[str, np.ndarray], fs: pafs.FileSystem) -> dict[str, np.ndarray]:
    """Ray Data UDF: ``{path, uri}`` rows -> ``path (uri), image (uint8 HWC), width, height, error``."""
    images, errors = [], []
    for path in batch["path"]:
        try:
            image, error = decode_image(read_bytes(fs, str(path))), None
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error row
            image, error = EMPTY_IMAGE, _describe(exc)
        images.append(image)
        errors.append(error)
    column = np.empty(len(images), dtype=object)
    column[:] = images
    return {
        "path": batch["uri"],
        "image": column,
        "width": np.asarray([im.shape[1] for im in images], dtype=np.int32),
        "height": np.asarray([im.shape[0] for im in images], dtype=np.int32),
        "error": np.asarray(errors, dtype=object),
    }
