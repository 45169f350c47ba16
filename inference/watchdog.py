"""A hung detector must not hang the job: find a batch that takes far longer than the batches before
it, stop the detector process that holds it, and say so.

Each detector reports when it starts and ends a mini-batch (read, decode and detect of
``--batch-size`` images) to the :class:`inference.shard_source.Tally`. The driver asks the tally,
at every progress tick, which batches have run past the bound: ``--batch-timeout`` seconds, or by
default ``max(10 x p95 of the batch times so far, 120 s)``; a detector's first batch (warm-up, lazy
initialisation, compilation) gets ``max(3 x that, 600 s)``. The process holding a stalled batch is
killed with SIGKILL by a zero-CPU task on its node (that also ends a stopped process, a process
stuck in the kernel on a network filesystem read, a spinning decoder). A detector also says every
few seconds that it is alive (its heartbeat, :data:`inference.efficiency.HEARTBEAT`); one not heard
from for as long as the bound is stopped the same way, whether or not it holds a batch (a process
stopped between batches would otherwise hold the shards queued for it for ever), once that task
has found it still there (the pool ends detectors too). Ray restarts the actor and
Ray Data runs the shard again; the shard's marker (``_attempts/<shard>.json``) records the stall, so
after two attempts at full speed the shard goes one image at a time, and the image that stalls
:data:`inference.shard_stage.MAX_DEATHS` times becomes an error row ("TimedOut: ...").
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

from inference.uris import Location
from inference.writer import ATTEMPTS_DIR, read_json, write_json

MIN_BOUND = 120.0
P95_FACTOR = 10.0
FIRST_BATCH_BOUND = 600.0
FIRST_BATCH_FACTOR = 3.0


def bounds(timeout: float | None, p95: float | None) -> tuple[float, float] | None:
    """``(bound, first-batch bound)`` in seconds; None when the watchdog is off (``timeout == 0``)."""
    if timeout == 0:
        return None
    if timeout:
        return float(timeout), float(timeout)
    bound = max(P95_FACTOR * (p95 or 0.0), MIN_BOUND)
    return bound, max(FIRST_BATCH_FACTOR * bound, FIRST_BATCH_BOUND)


def stat_fields(pid: int) -> list[bytes] | None:
    """Process ``pid``'s ``/proc/<pid>/stat`` from its third field on (the state first); None if it
    is gone or this is not Linux."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2:].split()  # after the name, which may hold spaces


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``); None if it is gone or
    this is not Linux. With the pid it names one process: a pid may be given again later."""
    fields = stat_fields(pid)
    return None if fields is None else int(fields[19])  # field 22


def process_started_at(pid: int) -> float | None:
    """When process ``pid`` started, as a wall-clock time (None if unknown)."""
    ticks = process_start(pid)
    try:
        with open("/proc/uptime", "rb") as f:  # to 10 ms (/proc/stat's boot time: to the second)
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return None if ticks is None else time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


def _kill(pid: int, process: int | None = None) -> bool:
    """SIGKILL ``pid`` if it is still the process that started at ``process`` (when known);
    whether it was."""
    if process is not None and process_start(pid) != process:
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Watchdog:
    """The driver's side: asks the tally for stalled detectors, stops their processes, records the
    stall in the shard's marker, and keeps what to report."""

    tally: object
    out: Location
    timeout: float | None = None
    stalls: int = 0
    pending_recovery: int = 0
    stalled: str | None = None  # the last stall's line, until images complete again
    killing: dict = field(default_factory=dict)  # kill task (ObjectRef) -> its stall, until done

    def check(self, snapshot: dict, final: bool = False) -> list[str]:
        """One round: the lines to print (a recovery seen, stalls found; at the end only the first)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        lines = []
        if self.pending_recovery and snapshot.get("batches_since_stall", 0) > 0:
            lines.append(f"recovered: images complete again after {self.pending_recovery} "
                         f"stall{'s' if self.pending_recovery > 1 else ''} ({self.stalls} so far)")
            self.pending_recovery = 0
            self.stalled = None
        limits = bounds(self.timeout, snapshot.get("batch_p95"))
        if limits is None or final:
            return lines
        found = ray.get(self.tally.take_stalled.remote(*limits), timeout=30)
        for stall in found:
            if stall["shard"] is not None:
                self.note_in_marker(stall)
            if not stall["silent"]:  # a batch past its bound: a stall for certain, said at once
                lines.append(self._stalled(stall))
            kill = ray.remote(num_cpus=0, max_retries=0)(_kill).options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(stall["node"], soft=False))
            self.killing[kill.remote(stall["pid"], stall["process"])] = stall
        # A kill task may take a while to start on a busy node: it is waited for across rounds,
        # never given up on (a stall handed out by the tally is not handed out again). A silent
        # detector is a stall once its process was found still there, and stopped.
        done, _ = ray.wait(list(self.killing), num_returns=len(self.killing), timeout=0) \
            if self.killing else ([], [])
        for ref in done:
            stall = self.killing.pop(ref)
            try:
                stopped = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - its node is gone, and the process with it
                if not stall["silent"]:
                    lines.append(f"stall watchdog: pid {stall['pid']} on node {stall['node'][:8]} was "
                                 f"not stopped ({type(exc).__name__}): its node is gone, and the "
                                 "process with it")
                continue
            if stall["silent"] and stopped:
                lines.append(self._stalled(stall))
        return lines

    def _stalled(self, stall: dict) -> str:
        """Count a stall and its line (kept in :attr:`stalled` until images complete again)."""
        self.stalls += 1
        self.pending_recovery += 1
        where = f"a detector (pid {stall['pid']}, node {stall['node'][:8]})"
        batch = (f" on a batch of shard {stall['shard']} starting with {stall['uri']}"
                 if stall["shard"] is not None else " between batches")
        heard = "not been heard from" if stall["silent"] else "had no result"
        what = f"has {heard} for {stall['seconds']:.0f} s{batch} (bound {stall['bound']:.0f} s)"
        then = "stopped it" if stall["silent"] else "stopping it"
        self.stalled = f"stalled: {where} {what}; {then}: Ray restarts it and its work is tried again"
        return self.stalled

    def note_in_marker(self, stall: dict) -> None:
        """Record the stall in the shard's marker before its process is stopped (nothing else
        writes the marker while the process is stalled), for the error row of an image that keeps
        stalling."""
        name = f"{ATTEMPTS_DIR}/{stall['shard']}.json"
        marker = read_json(self.out, name) or {"attempt": 0, "deaths": {}}
        stalled = marker.setdefault("stalled", {})
        stalled[stall["uri"]] = round(stall["bound"], 1)
        write_json(self.out, name, marker)
