"""A hung detector must not hang the job: find a batch that takes far longer than the batches before
it, stop the detector process that holds it, and say so.

Each detector reports when it starts and ends a mini-batch (read, decode and detect of
``--batch-size`` images) to the :class:`inference.shard_source.Tally`. The driver asks the tally,
at every progress tick, which batches have run past the bound: ``--batch-timeout`` seconds, or by
default ``max(10 x p95 of the batch times so far, 120 s)``; a detector's first batch (warm-up, lazy
initialisation, compilation) gets ``max(3 x that, 600 s)``. The process holding a stalled batch is
killed with SIGKILL by a zero-CPU task on its node (that also ends a stopped process, a process
stuck in the kernel on a network filesystem read, a spinning decoder). Ray restarts the actor and
Ray Data runs the shard again; the shard's marker (``_attempts/<shard>.json``) records the stall, so
after two attempts at full speed the shard goes one image at a time, and the image that stalls
:data:`inference.shard_stage.MAX_DEATHS` times becomes an error row ("TimedOut: ...").
"""

from __future__ import annotations

import os
import signal
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


def _kill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Watchdog:
    """The driver's side: asks the tally for stalled batches, stops their processes, records the
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
            lines.append(f"recovered: images complete again after {self.pending_recovery} stalled "
                         f"batch{'es' if self.pending_recovery > 1 else ''} ({self.stalls} so far)")
            self.pending_recovery = 0
            self.stalled = None
        limits = bounds(self.timeout, snapshot.get("batch_p95"))
        if limits is None or final:
            return lines
        found = ray.get(self.tally.take_stalled.remote(*limits), timeout=30)
        for stall in found:
            self.note_in_marker(stall)
            self.stalls += 1
            self.pending_recovery += 1
            self.stalled = (
                f"stalled: a detector (pid {stall['pid']}, node {stall['node'][:8]}) has had no result "
                f"for {stall['seconds']:.0f} s on a batch of shard {stall['shard']} starting with "
                f"{stall['uri']} (bound {stall['bound']:.0f} s); stopping it: Ray restarts it and the "
                "shard is tried again")
            lines.append(self.stalled)
            kill = ray.remote(num_cpus=0, max_retries=0)(_kill).options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(stall["node"], soft=False))
            self.killing[kill.remote(stall["pid"])] = stall
        # A kill task may take a while to start on a busy node: it is waited for across rounds,
        # never given up on (a stall handed out by the tally is not handed out again).
        done, _ = ray.wait(list(self.killing), num_returns=len(self.killing), timeout=0) \
            if self.killing else ([], [])
        for ref in done:
            stall = self.killing.pop(ref)
            try:
                ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - its node is gone, and the process with it
                lines.append(f"stall watchdog: pid {stall['pid']} on node {stall['node'][:8]} was not "
                             f"stopped ({type(exc).__name__}): its node is gone, and the process with it")
        return lines

    def note_in_marker(self, stall: dict) -> None:
        """Record the stall in the shard's marker before its process is stopped (nothing else
        writes the marker while the process is stalled), for the error row of an image that keeps
        stalling."""
        name = f"{ATTEMPTS_DIR}/{stall['shard']}.json"
        marker = read_json(self.out, name) or {"attempt": 0, "deaths": {}}
        stalled = marker.setdefault("stalled", {})
        stalled[stall["uri"]] = round(stall["bound"], 1)
        write_json(self.out, name, marker)
