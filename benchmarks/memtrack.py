"""Run a command and sample the proportional memory (PSS) of its whole process tree from /proc.

PSS counts a shared page once across the processes sharing it, so Ray's shared-memory object
store is not multiplied by the number of workers mapping it (a sum of RSS would be).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_pss_bytes(root: int) -> int:
    tree, todo, total = _children(), [root], 0
    while todo:
        pid = todo.pop()
        total += _pss_kib(pid)
        todo.extend(tree.get(pid, []))
    return total * 1024


def kill_tree(root: int) -> None:
    """SIGKILL ``root`` and every process under it (Ray's daemons are the CLI's children; listed
    before any is killed, so none is orphaned first)."""
    tree, todo, pids = _children(), [root], []
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(tree.get(pid, []))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def run_measured(cmd: list[str], timeout: float, interval: float = 0.5, **kwargs) -> dict:
    """Run ``cmd``; return wall seconds, peak tree PSS, exit code, stdout, stderr (or a timeout)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)
    peak, stop = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_pss_bytes(proc.pid))
            stop.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_tree(proc.pid)
        out, err = proc.communicate()
    except BaseException:  # interrupted (the caller's SIGTERM, Ctrl-C): leave nothing running
        kill_tree(proc.pid)
        stop.set()
        raise
    stop.set()
    sampler.join()
    return {"wall": time.monotonic() - start, "peak_bytes": peak, "rc": proc.returncode,
            "timed_out": timed_out, "stdout": out, "stderr": err}
