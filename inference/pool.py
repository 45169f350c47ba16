"""Size the detector actor pool from the resources Ray sees, so the read stage is never starved.

The reference pipeline deadlocks on a 2-CPU machine with ``concurrency=2``: two CPU actors hold both
CPUs and no read task can ever be scheduled. Here CPU actors may use at most ``CPUs - 1`` CPUs (one
is always left to reading and decoding), whatever ``--workers`` asks for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from inference import allocator

# Batches a GPU detector runs at once by default (``--streams``): torchvision's detectors keep one
# GPU busy only part of the time from one thread (they synchronise inside and launch small kernels);
# other batches' kernels fill the gaps. Three: on an H200 (fp32, N = 4096) 119 images/s with two,
# 134 with three (benchmarks/RESULTS.md); each stream holds a batch's activations on the device.
GPU_STREAMS = 3


class WorkersError(ValueError):
    """A ``--workers`` value that cannot be parsed; the message names the option."""


def parse_workers(value: str | int | None) -> tuple[int, int] | None:
    """``"4"`` -> (4, 4); ``"1:8"`` -> (1, 8); ``None``/``"auto"`` -> None (decide from resources)."""
    if value is None or str(value).strip().lower() in ("", "auto"):
        return None
    text = str(value).strip()
    try:
        lo, _, hi = text.partition(":")
        low, high = int(lo), int(hi or lo)
    except ValueError:
        raise WorkersError(f"--workers: expected N or MIN:MAX, got {text!r}") from None
    if low < 1 or high < low:
        raise WorkersError(f"--workers: need 1 <= MIN <= MAX, got {text!r}")
    return low, high


@dataclass(frozen=True)
class PoolPlan:
    """How many detector actors, and what each one asks Ray for."""

    min_size: int
    max_size: int
    num_cpus: float
    num_gpus: float
    torch_threads: int
    device: str
    notes: list[str] = field(default_factory=list)
    # CPUs each listing (read) task asks for: it must fit beside the actors (a 1-CPU Ray node
    # with a 0.5-CPU actor could never run a 1-CPU task: the job would wait for ever).
    reader_cpus: float = 1.0
    # Batches each actor runs at once (``--streams``), each from its own thread (CUDA stream).
    streams: int = 1

    def env_vars(self) -> dict[str, str]:
        """Environment of the detector actors (which read and decode too).

        Ray renices worker processes to 15 and sets ``OMP_NUM_THREADS`` to the CPU request (1 here).
        At nice 15 every wake-up of the driver and Ray's daemons preempts the model's OpenMP threads,
        and OpenMP started with one thread stays slower after ``torch.set_num_threads``: together
        about 7 % of a 2-core machine's throughput (benchmarks/RESULTS.md). The detector is the job.
        And glibc's malloc keeps the memory a batch frees for the next one (:mod:`inference.allocator`).
        """
        return {"RAY_worker_niceness": "0", "OMP_NUM_THREADS": str(self.torch_threads), **allocator.env()}


def plan_pool(
    workers: tuple[int, int] | None,
    num_gpus: float | None,
    cluster_cpus: float,
    cluster_gpus: float,
    node_cpus: float | None = None,
    streams: int | None = None,
) -> PoolPlan:
    """Decide the pool. ``num_gpus`` is GPUs per actor; None means 1 if the cluster has GPUs, else 0.
    ``node_cpus`` is the CPU count of the cluster's largest node (None: the cluster is one node):
    an actor's torch threads never exceed it, however many CPUs the cluster has in all (two 2-CPU
    worker nodes are 4 CPUs, but no actor can use more than 2). Each actor also caps its threads at
    its own node's CPUs (:func:`threads_on_this_node`). ``streams``: batches per actor at once
    (None: :data:`GPU_STREAMS` on a GPU, 1 on a CPU)."""
    notes: list[str] = []
    gpus_per_actor = (1.0 if cluster_gpus > 0 else 0.0) if num_gpus is None else float(num_gpus)
    cpus = max(int(cluster_cpus), 1)
    per_node = max(int(node_cpus), 1) if node_cpus else cpus
    if gpus_per_actor > 0:
        slots = math.floor(cluster_gpus / gpus_per_actor) if cluster_gpus > 0 else None
        low, high = workers or (1, max(slots or 1, 1))
        if not slots:
            notes.append(f"{gpus_per_actor:g} GPU(s) per detector requested but Ray sees no GPU yet: "
                         "waiting for the cluster (autoscaler) to add GPU nodes")
        # An autoscaling cluster may show no GPU yet: then trust the request.
        num_cpus = 1.0 if cpus - high >= 1 else 0.0
        threads = max(1, min(4, cpus // max(high, 1), per_node))
        return PoolPlan(low, high, num_cpus, gpus_per_actor, threads, "cuda", notes,
                        streams=streams or GPU_STREAMS)
    # CPU actors: leave at least one CPU to the read/decode stage.
    slots = max(cpus - 1, 1)
    low, high = workers or (1, max(1, cpus // 8))
    if high > slots:
        notes.append(f"--workers {high} capped to {slots}: one of {cpus} CPUs is kept for reading")
        high = slots
    low = min(low, high)
    num_cpus = 1.0 if cpus >= 2 else 0.5
    threads = max(1, min(cpus // high, per_node))
    return PoolPlan(low, high, num_cpus, 0.0, threads, "cpu", notes,
                    reader_cpus=1.0 if cpus >= 2 else cpus - num_cpus, streams=streams or 1)


def threads_on_this_node(planned: int | None) -> int | None:
    """``planned`` torch threads, at most the CPUs Ray gives the node this process runs on (a
    detector actor calls it: on a cluster of unequal nodes the plan fits the largest)."""
    if not planned:
        return planned
    import ray

    if not ray.is_initialized():
        return planned
    here = ray.get_runtime_context().get_node_id()
    cpus = next((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["NodeID"] == here), 0)
    return max(1, min(planned, int(cpus))) if cpus else planned
