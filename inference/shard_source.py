"""The listing as a Ray Data source: one read task per listing unit, one block per shard.

Read tasks stream: a shard goes downstream as soon as its URIs are listed, so the detectors start
after the first page while the listing goes on, and no process ever holds the whole list. The
driver holds the units and, for ``--resume``, the ids of the finished shards (O(shards)).
A :class:`Tally` actor counts what was listed and what was detected, for progress reports.
"""

from __future__ import annotations

import collections
import time
from functools import partial

from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from inference.efficiency import device_seconds
from inference.listing import NO_SKIP, Skip, Unit, iter_uris
from inference.shards import SHARD_SCHEMA, cut, shard_id, shard_table
from inference.uris import Location


class Tally:
    """Counters shared by the read tasks, the detector actors and the driver (a Ray actor)."""

    def __init__(self, units: int, started: float | None = None) -> None:
        self.started = time.time() if started is None else started  # wall clock: shared by hosts
        self.first_result: float | None = None
        self.first_ready: float | None = None  # the first detector's model on its device
        self.first_detector: dict[str, float | None] = {}  # its start-up, step by step (wall clock)
        self.marks: dict[str, float] = {}  # the driver's steps (wall clock)
        self.listing_finished: float | None = None
        self.units = units
        self.units_done = 0
        self.listed = 0
        self.to_do = 0
        self.done = 0
        self.failed = 0
        self.other_files = 0  # listed files without an image extension
        # Batches in progress ((node id, pid) of the detector and which of its ``--streams`` calls
        # -> what and since when) and recent batch times, for the stall watchdog (inference.watchdog).
        self.running: dict[tuple[str, int, int], dict] = {}
        self.seasoned: set[tuple[str, int]] = set()  # detectors that have finished a batch
        self.durations: collections.deque = collections.deque(maxlen=2000)
        self.batches_since_stall = 0
        # Detector actors ((node id, pid) -> started, last heartbeat, devices): device_seconds.
        self.actors: dict[tuple[str, int], dict] = {}

    def actor_alive(self, node: str, pid: int, devices: float, started: float,
                    process: int | None = None) -> None:
        """A detector's heartbeat; ``process``: its process's start time (the watchdog stops only
        that process, never a later one given the same pid)."""
        self.actors[(node, pid)] = {"started": started, "last": time.time(), "devices": devices,
                                    "process": process}

    def detector_ready(self, steps: dict[str, float | None] | None = None) -> None:
        """A detector has its model on its device (and its batch size, ``--batch-size auto``);
        ``steps``: when its process started, its set-up began, torch was imported (wall clock)."""
        if self.first_ready is None:
            self.first_ready = time.time()
            self.first_detector = dict(steps or {})

    def mark(self, step: str, when: float) -> None:
        """The driver reached ``step`` at ``when`` (the start-up timeline of the summary)."""
        self.marks.setdefault(step, when)

    def startup(self) -> dict[str, float | None]:
        """Seconds from the job's start to each start-up step, in order."""
        steps = {**self.marks, **self.first_detector, "detector_ready": self.first_ready,
                 "first_detection": self.first_result}
        return {k: None if t is None else round(t - self.started, 3) for k, t in steps.items()}

    def add_listed(self, images: int, to_do: int) -> None:
        self.listed += images
        self.to_do += to_do

    def unit_finished(self, other_files: int = 0) -> None:
        self.other_files += other_files
        self.units_done += 1
        if self.units_done >= self.units:
            self.listing_finished = time.time()

    def add_done(self, images: int, failed: int) -> None:
        if self.first_result is None:
            self.first_result = time.time()
        self.done += images
        self.failed += failed

    def batch_started(self, node: str, pid: int, shard: str, uri: str, slot: int = 0) -> None:
        self.running[(node, pid, slot)] = {"node": node, "pid": pid, "shard": shard, "uri": uri,
                                           "since": time.time(),
                                           "first": (node, pid) not in self.seasoned}

    def batch_finished(self, node: str, pid: int, slot: int = 0) -> None:
        batch = self.running.pop((node, pid, slot), None)
        if batch is not None:
            self.durations.append(time.time() - batch["since"])
            self.seasoned.add((node, pid))
            self.batches_since_stall += 1

    def _pop_batches(self, detector: tuple[str, int]) -> list[dict]:
        """The batches a detector holds (one per ``--streams`` call), no longer tracked: its
        process is about to be stopped, and all of them with it."""
        keys = [key for key in self.running if key[:2] == detector]
        return [self.running.pop(key) for key in keys]

    def take_stalled(self, bound: float, first_bound: float) -> list[dict]:
        """The detectors to stop, each handed out once: those whose batch has run past its bound
        (``silent`` False), and those not heard from (no heartbeat) for as long, in a batch or
        between batches (``silent`` True: stopped, or ended by the pool; the watchdog tells which).
        A detector's first batch, or its silence before it finished one, gets ``first_bound``."""
        now, stalled = time.time(), []
        for key, batch in sorted(self.running.items(), key=lambda item: item[1]["since"]):
            detector = key[:2]
            limit = first_bound if batch["first"] else bound
            if key in self.running and now - batch["since"] > limit:
                stalled.append({**batch, "seconds": now - batch["since"], "bound": limit, "silent": False,
                                "process": self.actors.get(detector, {}).get("process")})
                self._pop_batches(detector)
                self.actors.get(detector, {})["handed"] = True
        for detector, actor in self.actors.items():
            limit = bound if detector in self.seasoned else first_bound
            if not actor.get("handed") and now - actor["last"] > limit:
                actor["handed"] = True  # until it is heard from again
                batch = (self._pop_batches(detector) or [{"shard": None, "uri": None}])[0]
                stalled.append({"node": detector[0], "pid": detector[1], "shard": batch["shard"],
                                "uri": batch["uri"], "seconds": now - actor["last"], "bound": limit,
                                "silent": True, "process": actor["process"]})
        if stalled:
            self.batches_since_stall = 0
        return stalled

    def _p95(self) -> float | None:
        if not self.durations:
            return None
        ordered = sorted(self.durations)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]

    def snapshot(self) -> dict:
        def since(t: float | None) -> float | None:
            return None if t is None else round(t - self.started, 3)

        return {"listed": self.listed, "to_do": self.to_do, "done": self.done, "failed": self.failed,
                "other_files": self.other_files, "batch_p95": self._p95(),
                "batches_since_stall": self.batches_since_stall,
                "listing_finished": self.units_done >= self.units,
                "listing_seconds": since(self.listing_finished),
                "seconds_to_detector_ready": since(self.first_ready),
                "startup_seconds": self.startup(),
                "seconds_to_first_detection": since(self.first_result),
                "device_seconds": device_seconds(self.actors, time.time())}


def _read(src: Location, units: list[Unit], extensions: tuple[str, ...], shard_size: int,
          finished: frozenset[str], retry_errors: bool, limit: int | None, tally, skip: Skip = NO_SKIP):
    """Shards of ``units`` in order; with a ``limit``, stop after that many images to do."""
    left = limit
    for unit in units:
        counts: collections.Counter = collections.Counter()
        for uris in cut(iter_uris(src, unit, extensions, skip, counts), shard_size):
            if left is not None and left <= 0:
                break
            sid = shard_id(uris)
            state = ("check" if retry_errors else "done") if sid in finished else "todo"
            if state == "todo" and left is not None:
                if len(uris) > left:
                    uris = uris[:left]
                    sid = shard_id(uris)
                left -= len(uris)
            if tally is not None:
                tally.add_listed.remote(len(uris), len(uris) if state != "done" else 0)
            yield shard_table([(sid, uris, state)])
        if tally is not None:
            tally.unit_finished.remote(counts["other_files"])
        if left is not None and left <= 0:
            break


class ShardSource(Datasource):
    """``ray.data.read_datasource(ShardSource(...))``: rows ``{shard, uris, state}``."""

    def __init__(self, src: Location, units: list[Unit], extensions: tuple[str, ...], shard_size: int,
                 finished: frozenset[str] = frozenset(), retry_errors: bool = False,
                 limit: int | None = None, tally=None, skip: Skip = NO_SKIP) -> None:
        self.src, self.units, self.extensions = src, units, extensions
        self.shard_size, self.finished, self.retry_errors = shard_size, finished, retry_errors
        self.limit, self.tally, self.skip = limit, tally, skip

    def get_name(self) -> str:
        return "ListImages"

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        # A --limit is global, so a limited job lists its units one after another in one task.
        groups = [self.units] if self.limit is not None else [[u] for u in self.units]
        return [
            ReadTask(partial(_read, self.src, group, self.extensions, self.shard_size, self.finished,
                             self.retry_errors, self.limit, self.tally, self.skip),
                     BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None), schema=SHARD_SCHEMA)
            for group in groups
        ]
