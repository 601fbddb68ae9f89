"""The process's heap where nothing is timed: freed blocks stay in the heap for the next one.

glibc serves an allocation at or above its mmap threshold (adjusted as blocks are freed, at
most 32 MiB) with fresh pages from the kernel and gives them back on free, and trims the top of
its heap past the trim threshold; every fresh page is a fault that the kernel fills with zeros.
A point's float64 references walk the draw block by block (a 32 MiB block of the draw, 2 MiB
temporaries, hundreds of times), so at B = 2048, C = 32768, fp32, accuracy only, the process
took 2.7-3.9 million page faults and 6-8 s of system time: more than the arithmetic. With both
thresholds at 64 MiB those blocks are reused from the heap: 11.0-11.7 s -> 8.7 s a point and 0.55
million faults, the peak RSS 1.42 -> 1.44 GB (docs/operations.md). The inputs (L bytes, 256 MiB
there) are above it and still go back to the kernel when freed.

Only where nothing is timed (`timing.enabled=false`): a variant's timed calls allocate too, and
in a default PyTorch process they pay those faults; keeping freed memory would time them as if
a caching allocator served them. A process keeps the setting once made (glibc cannot go back to
its adjusting threshold), so a later timed job in the same process would inherit it: a sweep's
jobs share one timing setting unless `timing.enabled` itself is swept.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt's parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
HEAP_BLOCK_BYTES = 64 << 20  # above the draw's 32 MiB blocks, below any point's logits worth keeping

_kept = False


def keep_freed_blocks() -> bool:
    """Blocks below HEAP_BLOCK_BYTES come from, and go back to, the heap (glibc's mallopt), once
    per process. False where the C library is not glibc (nothing is changed there)."""
    global _kept
    if _kept:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _kept = (
        mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_BYTES) == 1
        and mallopt(_M_TRIM_THRESHOLD, HEAP_BLOCK_BYTES) == 1
    )
    return _kept
