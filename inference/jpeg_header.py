"""A JPEG's markers from SOI to its first scan: enough to tell, without decoding, whether libjpeg
through torchvision decodes the file to the very pixels Pillow gives (:mod:`inference.decode`)."""

from __future__ import annotations

from typing import NamedTuple

# SOF0 baseline, SOF1 extended sequential, SOF2 progressive: the Huffman-coded DCT frames.
HUFFMAN_FRAMES = frozenset({0xC0, 0xC1, 0xC2})
# What else may come before the scan: DHT, DQT, DRI, COM, APP0-APP15. Any other marker (arithmetic
# coding, lossless or hierarchical frames, fill bytes, a second SOI) is left to Pillow.
_TABLES_AND_DATA = frozenset({0xC4, 0xDB, 0xDD, 0xFE, *range(0xE0, 0xF0)})
SOS = 0xDA
MAX_SEGMENTS = 256
EXIF = b"Exif\x00\x00"
XMP = b"http://ns.adobe.com/xap/1.0/\x00"
MPF = b"MPF\x00"  # a multi-picture file (MPO): Pillow opens those with a reader of its own
# Application segments that Pillow's own header reader fails on when shorter than this.
_PILLOW_MINIMUM = {(0xE0, b"JFIF"): 7, (0xEE, b"Adobe"): 7, (0xE2, b"ICC_PROFILE\x00"): 14}


class JpegHeader(NamedTuple):
    width: int
    height: int
    exif: bytes | None  # the APP1 EXIF segment, as Pillow keeps it (``Exif\0\0`` and a TIFF file)
    xmp: bytes | None  # the last APP1 XMP packet, as Pillow keeps it


def read_header(data: bytes) -> JpegHeader | None:
    """The frame size and metadata of a plain JPEG, None for anything else: ``data`` starts with SOI
    and ends with EOI; one SOF0/SOF1/SOF2 frame of 8-bit samples, 1 or 3 components and a size,
    before the first SOS; at most one EXIF segment; no MPF segment; every segment length in bounds."""
    if not (data.startswith(b"\xff\xd8\xff") and data.endswith(b"\xff\xd9")):
        return None
    pos, size, exif, xmp = 2, None, None, None
    for _ in range(MAX_SEGMENTS):
        if pos + 4 > len(data) or data[pos] != 0xFF:
            return None
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2:pos + 4], "big")
        start, end = pos + 4, pos + 2 + length
        if marker == SOS:
            return None if size is None else JpegHeader(*size, exif, xmp)
        if length < 2 or end > len(data):
            return None
        if marker in HUFFMAN_FRAMES:
            if size is not None:
                return None
            size = _frame_size(data[start:end])
            if size is None:
                return None
        elif marker not in _TABLES_AND_DATA or _pillow_reads_otherwise(data, marker, start, end):
            return None
        elif marker == 0xE1 and data.startswith(EXIF, start):
            if exif is not None:  # Pillow joins several into one
                return None
            exif = data[start:end]
        elif marker == 0xE1 and data.startswith(XMP, start):
            xmp = data[start + len(XMP):end]
        pos = end
    return None


def _frame_size(frame: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of an SOFn segment's body; None unless 8-bit, 1 or 3 components, not 0x0."""
    if len(frame) < 6 or frame[0] != 8 or frame[5] not in (1, 3) or len(frame) != 6 + 3 * frame[5]:
        return None
    height, width = int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big")
    return (width, height) if width and height else None


def _pillow_reads_otherwise(data: bytes, marker: int, start: int, end: int) -> bool:
    """A multi-picture (MPF) segment, or one that Pillow's header reader fails on."""
    return (marker == 0xE2 and data.startswith(MPF, start)) or any(
        marker == m and data.startswith(prefix, start) and end - start < least
        for (m, prefix), least in _PILLOW_MINIMUM.items())
