"""A time limit on each call of a variant, so that one that hangs gives a `timeout` row.

A real timer (SIGALRM, `setitimer`) interrupts the call from the main thread: the handler
raises `CallTimeout`, which the runner turns into a row with status `timeout`, and the sweep
goes on with the next variant. `CallTimeout` is a BaseException, like KeyboardInterrupt, so a
variant's own `except Exception` cannot swallow it.

What it can interrupt: Python code, and C code that returns to the interpreter or is a
retrying system call (time.sleep, a blocking read). A single C++ kernel that never returns
(an infinite loop inside one aten op) cannot be interrupted from inside the process; it holds
the sweep until it ends. Off the main thread, or on a platform without `setitimer`, there is
no limit (signals are delivered to the main thread only).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Iterator


class CallTimeout(BaseException):
    """A call ran past its time limit; the message names the setting."""


_limit_s: float | None = None  # the limit of the calls under `installed`, for the message


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise CallTimeout(f"the call ran past timing.call_timeout_s={_limit_s:g} s and was stopped")


def _usable() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextmanager
def installed(limit_s: float | None) -> Iterator[None]:
    """Calls under `armed()` inside this block are limited to `limit_s` seconds each (None or
    0: no limit). The previous SIGALRM handler is restored on the way out."""
    global _limit_s
    if not limit_s or not _usable():
        yield
        return
    previous, before = signal.signal(signal.SIGALRM, _on_alarm), _limit_s
    _limit_s = limit_s
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        _limit_s = before


@contextmanager
def armed() -> Iterator[None]:
    """One call under the installed limit (nothing when none is installed). Two system calls,
    made outside any timed interval by the timer (harness/measure/timing.py)."""
    if _limit_s is None:
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, _limit_s)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
