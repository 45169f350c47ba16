"""What ``detectionjob run`` shows on stderr: a progress bar on a terminal, plain lines elsewhere.

On a terminal the bar is redrawn in place (images done / total, percent, rate, ETA, failures) and
every other line is printed above it; in a Pod's log, or any pipe, progress is one plain line every
few seconds. Ray's own chatter is kept off the console unless ``-v``: its Python loggers are set
quiet where the job starts Ray (:func:`inference.pipeline._start_ray`), and :class:`NativeFilter`
drops the few lines Ray's C++ core prints on the driver's stderr that say nothing to a user.
Everything else that reaches stderr (errors, tracebacks, a worker's output) still shows.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from typing import TextIO

PREFIX = "[detectionjob]"
# Native (C++) lines of Ray's core worker that are notices for Ray's developers, not for a user:
# Ray Data starts its map actors with arguments in the object store and restarts allowed, by design.
NATIVE_NOISE = (
    re.compile(r"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the "
               r"object store and max_restarts > 0"),
)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def progress_text(snapshot: dict, elapsed: float) -> str:
    """``812/2048 images (39.6%), 1 failed, 12.30 images/s, ETA 1:46`` from a tally snapshot."""
    done, total = snapshot["done"], snapshot["to_do"]
    rate = done / elapsed if elapsed > 0 else 0.0
    if snapshot["listing_finished"]:
        pct = 100.0 * done / total if total else 100.0
        where = f"{done}/{total} images ({pct:.1f}%)"
        tail = f", ETA {_duration((total - done) / rate)}" if rate > 0 and done < total else ""
    else:
        where, tail = f"{done}/{total}+ images (still listing)", ""
    return f"{where}, {snapshot['failed']} failed, {rate:.2f} images/s{tail}"


def bar_text(snapshot: dict, elapsed: float, width: int) -> str:
    """One terminal line: a bar, then the same numbers as :func:`progress_text`."""
    done, total = snapshot["done"], snapshot["to_do"]
    text = progress_text(snapshot, elapsed)
    cells = max(10, min(40, width - len(text) - 4))
    if snapshot["listing_finished"] and total:
        full = min(cells, cells * done // total)
        bar = "█" * full + "░" * (cells - full)
    else:  # the total is not known yet: no bar to fill, a moving mark
        at = int(elapsed * 2) % cells
        bar = "░" * at + "▒" + "░" * (cells - at - 1)
    return f"{bar}  {text}"[:max(width - 1, 20)]


def human_summary(summary: dict) -> str:
    """The end of a run on a terminal, in a few lines (``_summary.json`` has everything)."""
    out = summary.get("output", "")
    classes = ", ".join(f"{name} {count}" for name, count in list(summary.get("per_class", {}).items())[:5])
    lines = [f"{summary['images']} images, {summary['failed_images']} failed, {summary['detections']} "
             f"detections in {_duration(summary['wall_seconds'])} ({summary['images_per_second']:.2f} "
             f"images/s)"]
    if classes:
        lines.append(f"most found: {classes}")
    lines += [f"  {line}" for line in summary.get("example_errors", [])[:3]]
    if summary.get("advice"):
        cost = f", estimated cost {summary['estimated_cost']:g}" if "estimated_cost" in summary else ""
        lines.append(f"devices: {summary['device_seconds'] / 3600:.2f} device-hours, "
                     f"{summary['images_per_device_hour']:.0f} images per device-hour{cost}; "
                     f"{summary['advice']}")
    lines.append(f"results: {out}/part-*.parquet   summary: {out}/_summary.json"
                 + (f"   samples: {out}/_samples/" if summary.get("samples") else ""))
    return "\n".join(lines)


class Console:
    """Lines and progress on one stream; a live bar when that stream is a terminal."""

    def __init__(self, stream: TextIO, tty: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.lock = threading.Lock()
        self.bar = ""  # what the terminal's last line shows now

    def _width(self) -> int:
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError):
            columns = 0
        return columns if columns >= 40 else 100  # a pseudo-terminal may say 0

    def _clear(self) -> None:
        if self.bar:
            self.stream.write("\r\x1b[2K")
            self.bar = ""

    def line(self, text: str) -> None:
        """Print ``text`` as its own line(s), above the bar."""
        with self.lock:
            bar = self.bar
            self._clear()
            self.stream.write(text if text.endswith("\n") else text + "\n")
            if bar:
                self.stream.write(bar)
                self.bar = bar
            self.stream.flush()

    def note(self, text: str) -> None:
        self.line(f"{PREFIX} {text}")

    def progress(self, snapshot: dict, elapsed: float, final: bool = False) -> None:
        """The bar redrawn (terminal), or one plain progress line (anything else)."""
        if not self.tty:
            self.line(f"{PREFIX} {progress_text(snapshot, elapsed)}")
            return
        with self.lock:
            text = bar_text(snapshot, elapsed, self._width())
            self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
            self.bar = "" if final else text
            self.stream.flush()


class NativeFilter:
    """Route this process's file descriptor 2 through a pipe, dropping :data:`NATIVE_NOISE` lines.

    Python's ``sys.stderr``, logging and Ray's native code all write to fd 2; a thread reads the
    pipe and hands every other line to the console (so lines never tear the progress bar). The
    console keeps writing to the original stderr, duplicated before the switch.
    """

    def __init__(self, console_factory=Console) -> None:
        sys.stderr.flush()
        self.saved = os.dup(2)
        self.console = console_factory(os.fdopen(os.dup(self.saved), "w", encoding="utf-8",
                                                 errors="replace", closefd=True))
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self.read = read
        self.thread = threading.Thread(target=self._pump, name="detectionjob-stderr", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        pending = b""
        while True:
            chunk = os.read(self.read, 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                self._pass(raw.decode("utf-8", errors="replace"))
        if pending:
            self._pass(pending.decode("utf-8", errors="replace"))

    def _pass(self, text: str) -> None:
        if not any(p.search(text) for p in NATIVE_NOISE):
            self.console.line(text)

    def close(self, timeout: float = 2.0) -> None:
        """Put fd 2 back and print what is still in the pipe (processes this one started and that
        still hold the pipe's other end can delay that by at most ``timeout`` s)."""
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.thread.join(timeout)
        if not self.thread.is_alive():
            os.close(self.read)
        self.console.stream.flush()


class Plain:
    """No filter (``-v``): the console writes to ``sys.stderr`` itself."""

    def __init__(self) -> None:
        self.console = Console(sys.stderr)

    def close(self) -> None:
        sys.stderr.flush()

