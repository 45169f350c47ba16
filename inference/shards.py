"""Cut the URI stream into shards, the unit of work, of output and of ``--resume``.

Shard boundaries are content-defined: a shard ends after a URI whose hash is ``0 mod size`` (or at
``4 x size``), so each shard holds ``size`` URIs on average, and an image added to (or removed
from) a growing bucket changes only the one shard it falls into. A shard's id is a hash of its
URIs: the same images give the same id, hence the same part file name, in every run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

import pyarrow as pa

MAX_FACTOR = 4
SHARD_SCHEMA = pa.schema([
    pa.field("shard", pa.string(), nullable=False),
    pa.field("uris", pa.list_(pa.string()), nullable=False),
    pa.field("state", pa.string(), nullable=False),  # "todo" | "done" | "check" (--retry-errors)
])


def shard_id(uris: list[str]) -> str:
    """16 hex digits naming the shard: a hash of its URIs, in order."""
    digest = hashlib.blake2b(digest_size=8)
    for uri in uris:
        digest.update(uri.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _boundary_hash(uri: str) -> int:
    """A well-mixed 64-bit hash (CRC32's low bits follow sequential names like img-0001.jpg in
    runs: shards of 1 and of the 4x cap instead of ``size``)."""
    return int.from_bytes(hashlib.blake2b(uri.encode(), digest_size=8).digest(), "little")


def cut(uris: Iterable[str], size: int) -> Iterator[list[str]]:
    """Content-defined shards of ``uris`` averaging ``size`` (at most ``4 x size``)."""
    shard: list[str] = []
    for uri in uris:
        shard.append(uri)
        if len(shard) >= MAX_FACTOR * size or _boundary_hash(uri) % size == 0:
            yield shard
            shard = []
    if shard:
        yield shard


def shard_table(shards: list[tuple[str, list[str], str]]) -> pa.Table:
    return pa.table({"shard": [s[0] for s in shards], "uris": [s[1] for s in shards],
                     "state": [s[2] for s in shards]}, schema=SHARD_SCHEMA)
