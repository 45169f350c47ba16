"""Content-defined shards (inference.shards): an exact, streamed partition of the URI stream whose
boundaries depend on the URIs themselves, so one added or removed image changes only its shard."""

from __future__ import annotations

import itertools
import random
import re
import statistics

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference.shards import MAX_FACTOR, SHARD_SCHEMA, _boundary_hash, cut, shard_id, shard_table


def is_boundary(uri: str, size: int) -> bool:
    """The documented rule: a shard ends after a URI whose hash is 0 mod ``size``."""
    return _boundary_hash(uri) % size == 0


def sorted_keys(n: int, step: int = 2) -> list[str]:
    """``n`` sorted S3-like keys with gaps (odd numbers free) for insertions. Shard sizes are
    geometric, so ~2 % of shards reach the 4 x size cap; under this prefix none of the first 50k
    keys' shards at size 256 do (the stability fixture checks it), which keeps its claims exact."""
    return [f"s3://bucket/images45/{i:07d}.jpg" for i in range(0, n * step, step)]


def ids(keys: list[str], size: int) -> list[str]:
    return [shard_id(s) for s in cut(keys, size)]


# --- cut: an exact partition ------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(uris=st.lists(st.text(min_size=0, max_size=12), max_size=120), size=st.integers(1, 9))
def test_cut_is_an_exact_ordered_partition_following_the_rule(uris, size):
    shards = list(cut(uris, size))
    assert [u for s in shards for u in s] == uris  # nothing lost, nothing twice, order kept
    assert all(1 <= len(s) <= MAX_FACTOR * size for s in shards)
    for i, s in enumerate(shards):
        # no URI before the last one of a shard would have ended it ...
        assert not any(is_boundary(u, size) for u in s[:-1])
        # ... and every shard but the stream's last ends at a boundary URI or at the cap
        if i < len(shards) - 1:
            assert is_boundary(s[-1], size) or len(s) == MAX_FACTOR * size


def test_empty_stream_gives_no_shards():
    assert list(cut([], 5)) == []
    assert list(cut(iter(()), 1)) == []


def test_size_one_gives_one_uri_per_shard():
    keys = sorted_keys(1000)
    assert list(cut(keys, 1)) == [[k] for k in keys]


def test_cut_streams_an_endless_input():
    """``cut`` is lazy: shards of an endless stream come out one by one."""
    endless = (f"s3://b/{i}.jpg" for i in itertools.count())
    first_three = list(itertools.islice(cut(endless, 50), 3))
    taken = sum(map(len, first_three))
    assert [u for s in first_three for u in s] == [f"s3://b/{i}.jpg" for i in range(taken)]
    assert next(endless) == f"s3://b/{taken}.jpg"  # nothing read ahead


@pytest.mark.parametrize("size", [16, 100, 256, 1000])
@pytest.mark.parametrize("template", ["s3://bucket/images/{:06d}.jpg", "/data/voc/JPEGImages/2008_{:06d}.jpg",
                                      "gs://b/x/img_{}.png"])
def test_shard_sizes_on_100k_keys(size, template):
    keys = [template.format(i) for i in range(100_000)]
    lengths = [len(s) for s in cut(keys, size)]
    assert sum(lengths) == len(keys)
    assert max(lengths) <= MAX_FACTOR * size
    # geometric lengths capped at 4 x size average (1 - e^-4) x size ~ 0.98 x size
    assert 0.8 * size <= statistics.mean(lengths) <= 1.2 * size, statistics.mean(lengths)


# --- shard_id -----------------------------------------------------------------------------------

def test_shard_id_is_deterministic_and_content_sensitive():
    a = ["s3://b/1.jpg", "s3://b/2.jpg", "s3://b/3.jpg"]
    sid = shard_id(a)
    assert re.fullmatch(r"[0-9a-f]{16}", sid)
    assert shard_id(list(a)) == sid  # same URIs, same id (a pure function of the URIs)
    others = [a[:2], a + ["s3://b/4.jpg"], [a[1], a[0], a[2]], ["s3://b/1.jpg", "s3://b/2.jpg", "s3://b/3.JPG"],
              ["s3://b/1.jpgs3://b/2.jpg", "s3://b/3.jpg"], []]
    all_ids = {sid, *(shard_id(o) for o in others)}
    assert len(all_ids) == len(others) + 1


def test_shard_ids_of_a_listing_are_distinct():
    keys = sorted_keys(20_000)
    listing_ids = ids(keys, 64)
    assert len(set(listing_ids)) == len(listing_ids)
    assert ids(keys, 64) == listing_ids  # recomputed: identical


# --- content-defined stability ----------------------------------------------------------------

KEYS = sorted_keys(50_000)


@pytest.fixture(scope="module")
def base_ids_256():
    shards = list(cut(KEYS, 256))
    # at size 256 no shard of these keys reaches the 4 x size cap: every cut is content-defined
    assert max(map(len, shards)) < MAX_FACTOR * 256
    return {shard_id(s) for s in shards}


def next_key(key: str) -> str:
    """The free key right after ``key`` (``.../0000042.jpg`` -> ``.../0000043.jpg``)."""
    return key[:-11] + f"{int(key[-11:-4]) + 1:07d}.jpg"


def insert(keys: list[str], i: int) -> tuple[list[str], str]:
    """Insert the free key right after ``keys[i]`` (the list stays sorted)."""
    new = next_key(keys[i])
    return keys[:i + 1] + [new] + keys[i + 1:], new


def test_inserting_one_key_changes_at_most_two_shards(base_ids_256):
    rng = random.Random(7)
    positions = [0, len(KEYS) - 1, *rng.sample(range(len(KEYS)), 25)]
    for i in positions:
        grown, _ = insert(KEYS, i)
        after = set(ids(grown, 256))
        gone, new = base_ids_256 - after, after - base_ids_256
        # the shard the key falls into is replaced (split in two if the key is itself a boundary)
        assert len(gone) <= 1 and 1 <= len(new) <= 2, (i, len(gone), len(new))
        assert len(after & base_ids_256) >= len(base_ids_256) - 1


def test_inserting_a_boundary_key_splits_only_its_shard(base_ids_256):
    i = next(i for i in range(len(KEYS)) if is_boundary(next_key(KEYS[i]), 256)
             and not is_boundary(KEYS[i], 256))
    grown, _ = insert(KEYS, i)
    after = set(ids(grown, 256))
    assert len(base_ids_256 - after) == 1 and len(after - base_ids_256) == 2
    assert len(after) == len(base_ids_256) + 1


def test_removing_one_key_changes_at_most_two_shards(base_ids_256):
    rng = random.Random(11)
    positions = [0, len(KEYS) - 1, *rng.sample(range(len(KEYS)), 25)]
    # and a boundary key: its shard merges with the next one
    boundary = next(i for i in range(100, len(KEYS))
                    if is_boundary(KEYS[i], 256) and not is_boundary(KEYS[i - 1], 256))
    for i in [*positions, boundary]:
        shrunk = KEYS[:i] + KEYS[i + 1:]
        after = set(ids(shrunk, 256))
        gone, new = base_ids_256 - after, after - base_ids_256
        assert len(gone) <= 2 and len(new) <= 1, (i, len(gone), len(new))
        if i == boundary:
            assert (len(gone), len(new)) == (2, 1)


def test_forced_cuts_resynchronise_at_the_next_content_boundary():
    """Where a run of URIs has no boundary, the 4 x size cap cuts by count, so an insertion there
    shifts the capped cuts; everything before the changed shard and after the next content-defined
    boundary is still untouched (exactly: same shards, same ids)."""
    size = 8
    keys = KEYS[:20_000]
    before = list(cut(keys, size))
    capped = [k for k, s in enumerate(before) if len(s) == MAX_FACTOR * size]
    assert capped, "the test needs capped shards at this size"
    starts = list(itertools.accumulate([0] + [len(s) for s in before]))
    for k in capped[:15]:
        i = starts[k] + 3  # a key inside a capped shard
        grown, _ = insert(keys, i)
        after = list(cut(grown, size))
        assert [u for s in after for u in s] == grown
        # the first content-defined boundary after the inserted key (old index): a cut follows it
        # in both listings, and from there on the state of the cut is the same
        j = next(j for j in range(i + 1, len(keys)) if is_boundary(keys[j], size))
        m = starts.index(j + 1)  # the old shard starting right after that boundary
        assert after[:k] == before[:k]
        assert after[len(after) - (len(before) - m):] == before[m:]
        middle = after[k:len(after) - (len(before) - m)]
        assert [u for s in middle for u in s] == grown[starts[k]:j + 2]
        changed = set(map(shard_id, after)) - set(map(shard_id, before))
        assert changed == set(map(shard_id, middle))
        # the changed shards are those between the capped shard's start and that boundary
        assert len(middle) <= (j + 2 - starts[k]) // (MAX_FACTOR * size) + 2


# --- shard_table --------------------------------------------------------------------------------

def test_shard_table_schema_and_values():
    shards = [(shard_id(["a", "b"]), ["a", "b"], "todo"), (shard_id(["c"]), ["c"], "done")]
    table = shard_table(shards)
    assert table.schema == SHARD_SCHEMA
    assert table.to_pylist() == [{"shard": s, "uris": u, "state": st_} for s, u, st_ in shards]
    empty = shard_table([])
    assert empty.num_rows == 0 and empty.schema == SHARD_SCHEMA
    assert table.column("uris").type == pa.list_(pa.string())
