"""The detector as a Ray Data stage over shards: decode, detect, write the shard's part.

Importable without torch (the driver never loads it). One call takes one shard: its images are read
and decoded on threads one mini-batch ahead of the detector, detected ``batch_size`` at a time, and
written as the shard's Parquet part right here, where the rows are. What goes back to the driver
is one small row of counts (and up to K sample candidates) per shard.

A shard in progress has a marker, ``_attempts/<shard>.json``. When Ray Data runs a shard again
because its worker died, the marker says so; from the third attempt the shard is done carefully:
one image at a time, each named in the marker before it is touched. An image that was named there
when a worker died ``MAX_DEATHS`` times becomes an error row instead of being tried again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from inference.efficiency import HEARTBEAT, BusyClock
from inference.listing import sources_for
from inference.model_config import ModelConfig
from inference.sampling import candidates
from inference.store import StoreDown, patiently
from inference.store import check as check_store
from inference.uris import Location
from inference.watchdog import process_start, process_started_at
from inference.writer import ATTEMPTS_DIR, clear_attempt, read_json, read_part, write_json, write_part

# A file that was being read or detected when its worker process died this many times becomes an
# error row: a file that crashes the decoder, or runs the worker out of memory, cannot stall the job.
MAX_DEATHS = 2
CAREFUL_AFTER = 2  # attempts at full speed before a shard is done one image at a time

STATS_SCHEMA = pa.schema([
    pa.field("shard", pa.string()),
    pa.field("listed", pa.int64()),
    pa.field("skipped", pa.int64()),
    pa.field("images", pa.int64()),
    pa.field("failed", pa.int64()),
    pa.field("detections", pa.int64()),
    pa.field("per_class", pa.string()),  # JSON {name: count}
    pa.field("samples", pa.string()),  # JSON [row, ...]
    pa.field("first_error", pa.string()),
    pa.field("torch_threads", pa.int64()),  # the detector's, on the node it ran on
    pa.field("batch_size", pa.int64()),  # the detector's (``--batch-size auto``: what it chose)
    pa.field("timed_out", pa.int64()),  # error rows of images that stalled MAX_DEATHS times
    pa.field("busy_seconds", pa.float64()),  # in the forward pass (inference.efficiency)
    pa.field("wait_seconds", pa.float64()),  # waiting for the next mini-batch's images
])
TIMED_OUT = "TimedOut: "
log = logging.getLogger(__name__)
T = TypeVar("T")


def shard_stats(table: pa.Table) -> dict:
    """Counts of a result table: images, failed, detections, per-class."""
    names = pc.list_flatten(table.column("label_names"))
    per_class = {}
    if len(names):
        per_class = {v["values"]: v["counts"] for v in pc.value_counts(names).to_pylist()}
    errors = table.column("error").drop_null()
    timed_out = pc.sum(pc.starts_with(errors, TIMED_OUT)).as_py() or 0 if len(errors) else 0
    return {"images": table.num_rows, "failed": len(errors), "detections": len(names),
            "per_class": json.dumps(per_class), "first_error": errors[0].as_py() if len(errors) else None,
            "timed_out": timed_out}


def _gave_up(uri: str, deaths: int, marker: dict) -> str:
    """The error row of an image that its worker never got past ``deaths`` times."""
    bound = marker.get("stalled", {}).get(uri)
    if bound is not None:
        return (f"{TIMED_OUT}no result within {bound:.0f} s, {deaths} attempts (its detector was stopped "
                "and restarted each time: a file that hangs the reader or the decoder, or a stuck device)")
    return (f"WorkerDied: the worker died {deaths} times while reading or detecting this image "
            "(a file that crashes the decoder, or needs more memory than the worker has)")


class ShardStage:
    """Ray Data callable class: the model is built once in ``__init__``; one shard per call."""

    def __init__(self, spec: ModelConfig, out: Location, inputs: dict[str, Location], batch_size: int | None,
                 samples: int = 0, tally=None, device: str = "cpu", num_threads: int | None = None,
                 precision: str = "fp32", store_wait: float = 300.0, devices: float = 1.0,
                 streams: int = 1) -> None:
        born = time.time()  # the device is held from here, model load included
        from inference.detector import Detector
        from inference.pool import threads_on_this_node

        imported = time.time()  # torch and torchvision with it: seconds where Python has no bytecode
        self.threads = threads_on_this_node(num_threads)
        self.detector = Detector(spec, device=device, num_threads=self.threads, precision=precision)
        self.out, self.inputs = out, dict(inputs)
        # None: ``--batch-size auto``, the largest batch that fits this detector's device
        self.batch_size = batch_size or self.detector.largest_batch(streams=streams)
        self.samples, self.tally = samples, tally
        self.store_wait = store_wait
        # ``streams`` shards at once (Ray Data calls this object from as many threads), each on its
        # own CUDA stream, each reading its next mini-batch ahead
        self.ahead = ThreadPoolExecutor(streams, thread_name_prefix="decode-ahead")
        self.where: tuple[str, int] | None = None  # this detector's (node id, pid), for the tally
        self.waiting = BusyClock("cpu")  # waiting for read and decode (overlapping waits once)
        self._reported = {"busy": 0.0, "wait": 0.0}  # of both clocks, in the count rows so far
        self._report_lock = threading.Lock()
        if tally is not None:
            import os

            import ray

            self.where = (ray.get_runtime_context().get_node_id(), os.getpid())
            threading.Thread(target=self._heartbeat, args=(born, devices), daemon=True,
                             name="detectionjob-heartbeat").start()
            tally.detector_ready.remote({"detector_process": process_started_at(os.getpid()),
                                         "detector_setup": born, "torch_imported": imported})

    def _heartbeat(self, born: float, devices: float) -> None:
        """Tell the tally every few seconds that this detector (and its devices) is still here: a
        detector not heard from is stopped by the stall watchdog, so one failed beat does not end
        them. Ends once this worker is disconnected (the pool shutting down): a call then would
        make Ray start a new cluster of its own from this thread (its auto-init)."""
        import ray

        process = process_start(self.where[1])
        while ray.is_initialized():
            try:
                self.tally.actor_alive.remote(*self.where, devices, born, process)
            except Exception as exc:  # noqa: BLE001 - the tally or this worker is going away
                log.debug("heartbeat: %s", exc)
            time.sleep(HEARTBEAT)

    def _batch(self, shard: str, uri: str) -> None:
        """Tell the tally a mini-batch starts (the stall watchdog's clock; inference.watchdog)."""
        if self.tally is not None:
            # the calling thread is the slot: one batch at a time per ``--streams`` call
            self.tally.batch_started.remote(*self.where, shard, uri, threading.get_ident())

    def _loaded(self, shard: str, uris: list[str], pending: Future | None = None) -> dict:
        """The mini-batch read and decoded (``pending``: already under way); while a store does
        not answer, it is waited for (up to ``--store-wait``) and the batch read again, the stall
        watchdog told each time that this detector waits rather than hangs."""
        from inference.decode import load_uris

        def again() -> dict:
            return load_uris(uris, self._locate)

        first = pending.result if pending is not None else again
        token = self.waiting.start()
        try:
            return first()
        except StoreDown:
            return patiently(again, self.store_wait, lambda: self._batch(shard, uris[0]))
        finally:
            self.waiting.stop(token)

    def _output(self, work: Callable[[], T]) -> T:
        """``work()`` on the output store, waited for like the input's (between mini-batches: the
        stall watchdog does not time it)."""
        def attempt() -> T:
            try:
                return work()
            except Exception as exc:
                check_store(exc, self.out.fs, self.out.path)  # StoreDown: the store, not the file
                raise

        return patiently(attempt, self.store_wait)

    def _batch_done(self) -> None:
        if self.tally is not None:
            self.tally.batch_finished.remote(*self.where, threading.get_ident())

    def _clocks_since_last_row(self) -> dict[str, float]:
        """Busy and input-wait seconds of this detector since the last count row: shards that ran at
        once share their time, and the rows' sum is the detector's."""
        with self._report_lock:
            now = {"busy": self.detector.clock.total(), "wait": self.waiting.total()}
            delta = {k: now[k] - self._reported[k] for k in now}
            self._reported = now
        return {"busy_seconds": delta["busy"], "wait_seconds": delta["wait"]}

    def _locate(self, uri: str):
        loc, path = sources_for(uri, self.inputs)
        return loc.fs, path

    def detect_carefully(self, shard: str, uris: list[str], marker: dict) -> pa.Table:
        """Rows for ``uris`` one image at a time, each named in the shard's marker first."""
        from inference.decode import EMPTY_IMAGE
        from inference.output_schema import OUTPUT_SCHEMA

        tables = []
        for uri in uris:
            deaths = marker["deaths"].get(uri, 0)
            if deaths >= MAX_DEATHS:
                loaded = {"path": [uri], "image": [EMPTY_IMAGE], "width": [0], "height": [0],
                          "error": [_gave_up(uri, deaths, marker)]}
                tables.append(self._detected(loaded))
                continue
            self._output(partial(write_json, self.out, f"{ATTEMPTS_DIR}/{shard}.json",
                                        {**marker, "current": uri}))
            self._batch(shard, uri)
            tables.append(self._detected(self._loaded(shard, [uri])))
            self._batch_done()
        return pa.concat_tables(tables) if tables else OUTPUT_SCHEMA.empty_table()

    def _detected(self, loaded: dict) -> pa.Table:
        table = self.detector(loaded)
        if self.tally is not None:
            self.tally.add_done.remote(table.num_rows, len(table.column("error").drop_null()))
        return table

    def detect(self, shard: str, uris: list[str]) -> pa.Table:
        """Rows for ``uris``; the next mini-batch is read and decoded while this one is detected."""
        from inference.decode import load_uris
        from inference.output_schema import OUTPUT_SCHEMA

        batches = [uris[i:i + self.batch_size] for i in range(0, len(uris), self.batch_size)]
        tables = []
        pending = self.ahead.submit(load_uris, batches[0], self._locate) if batches else None
        for i in range(len(batches)):
            self._batch(shard, batches[i][0])
            loaded = self._loaded(shard, batches[i], pending)
            if i + 1 < len(batches):
                pending = self.ahead.submit(load_uris, batches[i + 1], self._locate)
            tables.append(self._detected(loaded))
            self._batch_done()
        return pa.concat_tables(tables) if tables else OUTPUT_SCHEMA.empty_table()

    def run_shard(self, shard: str, uris: list[str], state: str) -> dict:
        row = {"shard": shard, "listed": len(uris), "skipped": 0, "samples": "[]",
               "torch_threads": self.threads, "batch_size": self.batch_size}
        kept = None
        if state == "check":  # --retry-errors: keep the part's good rows, detect its error rows again
            old = self._output(partial(read_part, self.out, shard))
            bad = pc.is_valid(old.column("error"))
            if not pc.any(bad).as_py():
                state = "done"
            else:
                kept = old.filter(pc.invert(bad))
                uris = old.filter(bad).column("path").to_pylist()
                row["skipped"] = kept.num_rows
        if state == "done":
            return {**row, "skipped": len(uris), "images": 0, "failed": 0, "detections": 0,
                    "per_class": "{}", "first_error": None, "timed_out": 0, "busy_seconds": 0.0,
                    "wait_seconds": 0.0}
        name = f"{ATTEMPTS_DIR}/{shard}.json"
        marker = self._output(partial(read_json, self.out, name)) or {"attempt": 0, "deaths": {}}
        if marker.get("current"):  # the worker died on this image last time
            marker["deaths"][marker["current"]] = marker["deaths"].get(marker["current"], 0) + 1
        marker = {"attempt": marker["attempt"] + 1, "deaths": marker["deaths"],
                  "stalled": marker.get("stalled", {})}
        self._output(partial(write_json, self.out, name, marker))
        # A worker died on this shard twice: a lost node is common (spot instances), so the first
        # retry goes at full speed; after that, one image at a time to find the file that kills.
        careful = marker["attempt"] > CAREFUL_AFTER
        fresh = self.detect_carefully(shard, uris, marker) if careful else self.detect(shard, uris)
        whole = pa.concat_tables([kept, fresh]) if kept is not None else fresh
        self._output(partial(write_part, self.out, shard, whole))
        self._output(partial(clear_attempt, self.out, shard))
        row.update(shard_stats(fresh), **self._clocks_since_last_row())
        row["samples"] = json.dumps(candidates(fresh, self.samples))
        return row

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = [self.run_shard(s, u, st) for s, u, st in zip(
            batch.column("shard").to_pylist(), batch.column("uris").to_pylist(),
            batch.column("state").to_pylist(), strict=True)]
        return pa.Table.from_pylist(rows, schema=STATS_SCHEMA)
