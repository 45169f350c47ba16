"""Polling, the one way tests wait for the control plane to converge."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 60, interval: float = 0.25,
             retry_errors: bool = False) -> T:
    """Poll ``fn`` until it returns something truthy, and return that; fail naming ``what``.

    With ``retry_errors`` an exception from ``fn`` counts as "not yet" (and is reported if the
    wait times out); without it, it propagates at once.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as exc:
            if not retry_errors:
                raise
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
