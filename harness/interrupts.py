"""Ctrl-C belongs to the user, a KeyboardInterrupt raised by a variant to the variant.

The runner turns anything a variant raises into an `error` row, SystemExit and
KeyboardInterrupt included, so that one variant cannot end the sweep. A real Ctrl-C must still
stop it, and cleanly: `install` (called by `python -m harness`) notes each SIGINT, and
`requested` tells the runner which of the two it is holding.

Where the interrupt lands matters. Inside a variant's calls (`immediate` sections) it is raised
at once, so a long call does not keep the user waiting; anywhere else (Hydra composing or
launching a job) raising would tear its state half-way, so the request is only noted and
`check` raises it at the next point or variant. A second Ctrl-C raises at once wherever it is.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from types import FrameType
from typing import Iterator

_requested = False
_immediate = 0


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _requested
    again = _requested
    _requested = True
    if _immediate or again:
        raise KeyboardInterrupt


def install() -> None:
    signal.signal(signal.SIGINT, _on_sigint)


def requested() -> bool:
    """True once the user pressed Ctrl-C (or the process got SIGINT)."""
    return _requested


def check() -> None:
    """Raise the noted Ctrl-C here, at a point where stopping leaves nothing half-done."""
    if _requested:
        raise KeyboardInterrupt


@contextmanager
def immediate() -> Iterator[None]:
    """A section (a variant's calls) where a Ctrl-C is raised as it arrives."""
    global _immediate
    _immediate += 1
    try:
        yield
    finally:
        _immediate -= 1
