"""Background processes for the test harness: start, wait for, log, stop.

Every process is started with ``start_new_session=True`` so that it leads its
own process group; :meth:`ManagedProcess.stop` signals the whole group
(SIGTERM, then SIGKILL). All live processes are also stopped by an ``atexit``
hook, so an aborted pytest run does not leak them, and on Linux each gets
``PR_SET_PDEATHSIG=SIGKILL``, so even a pytest killed with SIGKILL (a CI
timeout) takes them along.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

_registry_lock = threading.Lock()
_registry: list[ManagedProcess] = []


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class HarnessError(RuntimeError):
    """A harness component failed to start or to become ready."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 100) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except FileNotFoundError:
        return ""


class ManagedProcess:
    """A long-running component whose stdout+stderr go to ``log_path``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(("$ " + " ".join(self.argv) + "\n").encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent if os.uname().sysname == "Linux" else None,
        )
        with _registry_lock:
            _registry.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 100) -> str:
        return tail(self.log_path, lines)

    def wait_until(
        self,
        ready: Callable[[], bool],
        timeout: float,
        what: str,
        interval: float = 0.2,
    ) -> None:
        """Poll ``ready()`` until true; fail early (with the log) if the process dies."""
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise HarnessError(
                    f"{self.name} exited with code {self.proc.returncode} before {what}.\n"
                    f"--- last lines of {self.log_path} ---\n{self.log_tail(60)}"
                )
            try:
                if ready():
                    return
            except Exception as e:  # noqa: BLE001 - any error means "not ready yet"
                last_error = e
            time.sleep(interval)
        raise HarnessError(
            f"{self.name}: timed out after {timeout:.0f}s waiting for {what}"
            f" (last error: {last_error!r}).\n"
            f"--- last lines of {self.log_path} ---\n{self.log_tail(60)}"
        )

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds."""
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(grace)
            # Children that outlived the leader are in the same group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        finally:
            with contextlib.suppress(Exception):
                self._log.close()
            with _registry_lock:
                if self in _registry:
                    _registry.remove(self)

    def __repr__(self) -> str:
        state = "running" if self.alive() else f"exited {self.proc.returncode}"
        return f"<ManagedProcess {self.name} pid={self.proc.pid} {state} log={self.log_path}>"


def running() -> list[ManagedProcess]:
    """Processes started and not yet stopped (used to attach logs to failures)."""
    with _registry_lock:
        return list(_registry)


def stop_all() -> None:
    for p in reversed(running()):
        p.stop(grace=3.0)


atexit.register(stop_all)


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` for the block; the previous values, or their absence, come
    back after it."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
