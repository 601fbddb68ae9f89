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

Where a walk makes its draw ahead in a second thread (harness/loss/ahead.py, any job):
`one_arena`, so that the thread's blocks come from the same heap as the caller's allocations,
and `give_back_free_pages` at the walk's end, so that the walk's blocks are not resident under
the call that follows.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt's parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
HEAP_BLOCK_BYTES = 64 << 20  # above the draw's 32 MiB blocks, below any point's logits worth keeping

_kept = False
_one_arena: bool | None = None


def _mallopt():
    """glibc's mallopt, or None where the C library is not glibc (musl has none)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt


def one_arena() -> bool:
    """Threads started from now on allocate from the heap the process already has (glibc's
    M_ARENA_MAX = 1), once per process. A thread that makes a walk's blocks ahead of the caller
    (harness/loss/ahead.py) would otherwise get an arena of its own, where the blocks it made
    stay when the caller frees them, out of reach of the caller's next allocation: +0.07-0.11 GB
    of peak RSS at B = 2048, C = 32768 (against none with one arena). Threads that exist keep
    their own (torch's intra-op workers, started with the first parallel op), and a variant's
    calls run in the caller's thread, so what is timed allocates as before."""
    global _one_arena
    if _one_arena is None:
        mallopt = _mallopt()
        _one_arena = mallopt is not None and mallopt(_M_ARENA_MAX, 1) == 1
    return _one_arena


def keep_freed_blocks() -> bool:
    """Blocks below HEAP_BLOCK_BYTES come from, and go back to, the heap (glibc's mallopt), once
    per process. False where the C library is not glibc (nothing is changed there)."""
    global _kept
    if _kept:
        return True
    mallopt = _mallopt()
    if mallopt is None:
        return False
    _kept = (
        mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_BYTES) == 1
        and mallopt(_M_TRIM_THRESHOLD, HEAP_BLOCK_BYTES) == 1
    )
    return _kept


def give_back_free_pages() -> bool:
    """Give the heap's free pages back to the kernel (glibc's malloc_trim), where a walk of a
    large draw ends: its blocks, kept in the heap while it ran (keep_freed_blocks), would
    otherwise stay resident under the variant's call that follows, whose large tensors are mapped
    apart from the heap. At B = 2048, C = 32768 the points' peaks came back to what they were
    with the draw made in one thread (1.44-1.45 -> 1.36 GB fp32, 1.76-1.78 -> 1.66-1.67 GB soft);
    the next walk faults its blocks in again, once (0.1 s of system time a point). False where
    the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = (ctypes.c_size_t,), ctypes.c_int
    trim(0)
    return True
