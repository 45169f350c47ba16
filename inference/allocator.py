"""Keep the model's working memory between batches instead of handing it back to the kernel.

glibc's malloc serves a block of at least its mmap threshold (dynamic, at most 32 MiB) with a
fresh ``mmap`` and unmaps it when freed, and trims the heap's top once more than twice that is
free. A detector frees and reallocates the same large tensors every batch, so each batch faults
its working memory back in page by page, every page zeroed by the kernel: on the 2-core CPU
benchmark ~13,000 page faults per image, a quarter of the run's CPU time in the kernel
(benchmarks/RESULTS.md). With a fixed mmap threshold above any one tensor and a high trim
threshold, freed blocks stay in the heap and the next batch reuses them. Ray Data runs a detector
in a thread of its own, whose malloc arena (a 64 MiB heap at a time, unmapped as soon as it is
empty) predates the detector: a detector actor gets the settings as environment variables, read
by glibc when the process starts, with one arena for all its threads (:func:`env`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 * 2**20  # blocks below this come from the heap, and stay there when freed
TRIM_THRESHOLD = 2**30  # free memory at the heap's top kept for the next batch, at most

log = logging.getLogger(__name__)


def env() -> dict[str, str]:
    """The same thresholds, and one malloc arena, for a process about to start (a Ray worker)."""
    return {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
            "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set this process's malloc thresholds (glibc only; elsewhere nothing). True if both took."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 and mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
    if not done:
        log.debug("mallopt refused the thresholds (%d, %d)", mmap_threshold, trim_threshold)
    return done
