"""Ctrl-C belongs to the user, a KeyboardInterrupt raised by a variant to the variant.

The runner turns anything a variant raises into an `error` row, SystemExit and
KeyboardInterrupt included, so that one variant cannot end the sweep. A real Ctrl-C must still
stop it: `install` (called by `python -m harness`) notes each SIGINT before raising the usual
KeyboardInterrupt, and `requested` tells the runner which of the two it is holding.
"""

from __future__ import annotations

import signal
from types import FrameType

_requested = False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _requested
    _requested = True
    raise KeyboardInterrupt


def install() -> None:
    signal.signal(signal.SIGINT, _on_sigint)


def requested() -> bool:
    """True once the user pressed Ctrl-C (or the process got SIGINT)."""
    return _requested
